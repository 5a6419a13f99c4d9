"""``hrta train`` killed with SIGKILL at any point (issue 7, item 3, the command-line half; the
pipeline half is in tests/test_reliability_pipeline.py).

* At random times (several seeds), the real console script: while it runs, the output folder is
  watched, and whenever it is visible it must read back as a complete run; after the kill it is
  complete or absent; a rerun then gives files byte-identical to an uninterrupted run's.
* At every step of the atomic write (each fsync, rename, file and zip-member write: hrta.atomic,
  hrta.inputs.write_npz), in a forked child that SIGKILLs itself there: the same guarantees, and
  with --force over an existing run, the folder always holds one complete run, old or new.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from reliability_support import HRTA, SPEC, VOLATILE_METRICS, write_spec

from hrta.cli import main
from hrta.run import RunFolderError, read_run

# ~1 s of training with the numpy reference, so that random kill times fall before, during and
# after training and while the folder is written.
LONG = {**SPEC, "model": {"width": 40}, "task": {"name": "sin2d", "n_train": 40, "n_test": 30},
        "homotopy": [{"s": 0.5, "steps": 700}, {"s_from": 0.5, "s_to": 1.0, "steps": 700}],
        "batch_size": 20, "log_every": 50}
KILL_SEEDS = range(5)
RESULT_FILES = ("inputs.npz", "history.csv", "params.npz")
PROVENANCE = ("commit", "dirty", "host", "files")


def _result(folder: Path) -> tuple[dict[str, bytes], dict]:
    """What must not differ between an interrupted-and-rerun run and an uninterrupted one: the
    three result files byte for byte, and metrics.json less timings and provenance."""
    metrics = json.loads((folder / "metrics.json").read_text())
    stable = {k: v for k, v in metrics.items() if k not in VOLATILE_METRICS + PROVENANCE}
    return {name: (folder / name).read_bytes() for name in RESULT_FILES}, stable


def _complete_or_absent(folder: Path) -> bool:
    """True when ``folder`` holds a complete run; False when it is absent. Anything else (a
    folder that exists but does not read back) fails the test."""
    if not folder.exists():
        return False
    try:
        read_run(folder)
    except RunFolderError as err:
        pytest.fail(f"{folder} is visible but not a complete run: {err}")
    return True


@pytest.fixture(scope="module")
def long_spec(tmp_path_factory) -> tuple[Path, Path, float]:
    """The spec, an uninterrupted run of it (by the console script) and how long that took."""
    root = tmp_path_factory.mktemp("uninterrupted")
    spec = write_spec(root, LONG)
    started = time.monotonic()
    proc = subprocess.run([str(HRTA), "train", str(spec), "--out", str(root / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return spec, root / "run", time.monotonic() - started


@pytest.mark.skipif(not HRTA.exists(), reason="the hrta console script is not installed")
@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_sigkill_at_a_random_time_then_rerun(long_spec, tmp_path, reliability, seed):
    spec, reference, duration = long_spec
    out = tmp_path / "run"
    kill_at = random.Random(seed).uniform(0.05, 1.1) * duration
    proc = subprocess.Popen([str(HRTA), "train", str(spec), "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    seen_complete = False
    while time.monotonic() - started < kill_at and proc.poll() is None:
        seen_complete |= _complete_or_absent(out)
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    reliability["faults injected"] += 1
    finished = _complete_or_absent(out)
    if seen_complete and not finished:
        reliability["results lost"] += 1
    assert reliability["results lost"] == 0
    # rerun: train again unless the killed run had already finished
    if not finished:
        assert subprocess.run([str(HRTA), "train", str(spec), "--out", str(out), "--quiet"],
                              timeout=300).returncode == 0
    assert _result(out) == _result(reference)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run"]
    assert all(name.startswith(".run.") and name.endswith(".partial") for name in leftovers)


# ---------------------------------------------------------------------------- every write step

SHORT = {**SPEC, "homotopy": [{"s": 1.0, "steps": 8}], "log_every": 3}


def _patch_kill_points(kill_at: int, counter: list[int]) -> None:
    """In a forked child: SIGKILL this process at the kill_at-th call of any write step
    (kill_at = 0: only count them, in counter[0])."""

    def wrap(owner, name):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            counter[0] += 1
            if counter[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    for name in ("fsync", "rename", "replace", "rmdir", "unlink", "mkdir"):
        wrap(os, name)
    wrap(zipfile.ZipFile, "writestr")
    wrap(Path, "write_text")
    wrap(Path, "write_bytes")


def _train_in_child(argv: list[str], kill_at: int) -> int:
    """Run ``hrta`` main(argv) in a forked child with the kill points patched in; return the
    number of write steps it passed (when not killed) or -1 when it was killed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, no atexit, no buffered output
        try:
            os.close(read_end)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            counter = [0]
            _patch_kill_points(kill_at, counter)
            status = main(argv)
            os.write(write_end, f"{status} {counter[0]}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + 120
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child stuck at kill point {kill_at}")
        time.sleep(0.005)
    report = os.read(read_end, 100).decode()
    os.close(read_end)
    if os.WIFSIGNALED(wait_status):
        assert os.WTERMSIG(wait_status) == signal.SIGKILL
        return -1
    status, steps = report.split()
    assert status == "0", f"hrta exited {status}"
    return int(steps)


@pytest.mark.parametrize("force", [False, True], ids=["new-folder", "force-over-old-run"])
def test_sigkill_at_every_write_step(tmp_path, reliability, force):
    spec = write_spec(tmp_path, SHORT)
    old_spec = write_spec(tmp_path, {**SHORT, "seed": 99}, "old.yaml")
    reference = tmp_path / "reference"
    assert main(["train", str(spec), "--out", str(reference), "--quiet"]) == 0
    old = tmp_path / "old"
    assert main(["train", str(old_spec), "--out", str(old), "--quiet"]) == 0
    argv_extra = ["--force"] if force else []
    # count the write steps of one uninterrupted run
    probe = tmp_path / "probe"
    steps = _train_in_child(["train", str(spec), "--out", str(probe), "--quiet"], 0)
    assert steps >= 10 and _result(probe) == _result(reference)
    for kill_at in range(1, steps + 1):
        work = tmp_path / f"kill{kill_at}"
        work.mkdir()
        out = work / "run"
        if force:
            shutil.copytree(old, out)
        killed = _train_in_child(["train", str(spec), "--out", str(out), "--quiet",
                                  *argv_extra], kill_at)
        assert killed == -1, f"not killed at step {kill_at} of {steps}"
        reliability["faults injected"] += 1
        present = _complete_or_absent(out)
        if force:
            # the path always holds one complete run: the old one or the new one
            if not present:
                reliability["results lost"] += 1
            assert present, f"killed at write step {kill_at}: the old run is gone"
            state = _result(out)
            assert state in (_result(old), _result(reference)), kill_at
        if not present or _result(out) != _result(reference):
            assert main(["train", str(spec), "--out", str(out), "--quiet", "--force"]) == 0
        assert _result(out) == _result(reference), kill_at
    assert reliability["results lost"] == 0
