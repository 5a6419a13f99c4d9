"""Corrupt or foreign results are rejected with a clear message, never merged (issue 7, item 4).

Each case damages a copy of a complete run folder (a truncated file, missing history rows, a
file taken from another run, another spec or suite version) and checks that
``hrta.run.read_run`` raises RunFolderError naming the file and the problem, that
``hrta compare`` exits 2 with that one line and no traceback, that the pipeline's aggregate step
refuses to build a table from it, and that the batch runner does not count it as complete.

Suite-version rule (hrta.run.suite_compatible): a folder is read only when the hrta-bench
version that wrote it has the same major.minor as the running suite; patch releases may differ.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from reliability_support import SPEC, write_spec

from hrta import __version__
from hrta.aggregate import AggregateError, build_tables
from hrta.batch import is_complete
from hrta.cli import main
from hrta.grid import Run
from hrta.inputs import write_npz
from hrta.run import RunFolderError, read_run, suite_compatible
from hrta.spec import parse_spec

TRUNCATION_SEEDS = range(4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Complete run folders: 'a' (the one damaged), 'b' (same shapes, another seed), 'wide' (a
    wider model) and 'v' (a copy of 'a' kept pristine)."""
    root = tmp_path_factory.mktemp("runs")
    docs = {"a": SPEC, "b": {**SPEC, "seed": 4}, "wide": {**SPEC, "model": {"width": 9}}}
    for name, doc in docs.items():
        spec = write_spec(root, doc, f"{name}.yaml")
        assert main(["train", str(spec), "--out", str(root / name), "--quiet"]) == 0
    return {name: root / name for name in docs}


def _truncate(name: str, seed: int) -> Callable[[Path, dict], None]:
    def damage(folder: Path, runs: dict) -> None:
        data = (folder / name).read_bytes()
        cut = random.Random(f"{name}-{seed}").randrange(1, len(data) - 1)
        (folder / name).write_bytes(data[:cut])
    return damage


def _drop_history_rows(which: str) -> Callable[[Path, dict], None]:
    def damage(folder: Path, runs: dict) -> None:
        lines = (folder / "history.csv").read_text().splitlines(keepends=True)
        index = {"first": 1, "middle": len(lines) // 2, "last": len(lines) - 1}[which]
        del lines[index]
        (folder / "history.csv").write_text("".join(lines))
    return damage


def _take_from(other: str, name: str) -> Callable[[Path, dict], None]:
    def damage(folder: Path, runs: dict) -> None:
        shutil.copyfile(runs[other] / name, folder / name)
    return damage


def _edit_metrics(**changes) -> Callable[[Path, dict], None]:
    def damage(folder: Path, runs: dict) -> None:
        metrics = json.loads((folder / "metrics.json").read_text())
        for key, value in changes.items():
            if value is DELETE:
                del metrics[key]
            else:
                metrics[key] = value
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return damage


def _inputs_spec_version(version) -> Callable[[Path, dict], None]:
    def damage(folder: Path, runs: dict) -> None:
        with np.load(folder / "inputs.npz") as archive:
            arrays = {key: archive[key] for key in archive.files}
        spec = json.loads(str(arrays["spec_json"]))
        spec["spec_version"] = version
        arrays["spec_json"] = np.array(json.dumps(spec, sort_keys=True))
        write_npz(folder / "inputs.npz", arrays)
    return damage


def _replace_text(name: str, text: str) -> Callable[[Path, dict], None]:
    def damage(folder: Path, runs: dict) -> None:
        (folder / name).write_text(text)
    return damage


DELETE = object()
MAJOR, MINOR, PATCH = (int(x) for x in __version__.split(".")[:3])
OTHER_MINOR = f"{MAJOR}.{MINOR + 1}.0"
OTHER_MAJOR = f"{MAJOR + 1}.{MINOR}.{PATCH}"

# (id, damage, file or subject the message names, fragment of the message)
CASES = [
    *[(f"inputs-truncated-{s}", _truncate("inputs.npz", s), "inputs.npz", "not a readable")
      for s in TRUNCATION_SEEDS],
    *[(f"params-truncated-{s}", _truncate("params.npz", s), "params.npz", "unreadable")
      for s in TRUNCATION_SEEDS],
    *[(f"history-truncated-{s}", _truncate("history.csv", s), "history.csv", "")
      for s in TRUNCATION_SEEDS],
    *[(f"metrics-truncated-{s}", _truncate("metrics.json", s), "metrics.json", "JSON")
      for s in TRUNCATION_SEEDS],
    ("history-missing-first-row", _drop_history_rows("first"), "history.csv", "rows"),
    ("history-missing-middle-row", _drop_history_rows("middle"), "history.csv", "rows"),
    ("history-missing-last-row", _drop_history_rows("last"), "history.csv", "rows"),
    ("history-header-only", _replace_text("history.csv", "step,s,lr,train_loss\n"),
     "history.csv", "rows"),
    ("history-empty", _replace_text("history.csv", ""), "history.csv", "header"),
    ("history-not-numbers", _replace_text("history.csv", "step,s,lr,train_loss\n0,a,b,c\n"),
     "history.csv", "malformed"),
    ("history-of-another-run", _take_from("b", "history.csv"), "history.csv", "checksum"),
    ("params-of-another-run", _take_from("b", "params.npz"), "params.npz", "checksum"),
    ("params-of-another-width", _take_from("wide", "params.npz"), "params.npz", "shape"),
    ("metrics-of-another-run", _take_from("b", "metrics.json"), "", "different specs"),
    ("inputs-of-another-run", _take_from("b", "inputs.npz"), "", "different specs"),
    ("inputs-of-another-width", _take_from("wide", "inputs.npz"), "", "different specs"),
    ("metrics-spec-version-2", _edit_metrics(spec_version=2), "", "spec version"),
    ("metrics-spec-version-missing", _edit_metrics(spec_version=DELETE), "", "spec version"),
    ("inputs-spec-version-2", _inputs_spec_version(2), "inputs.npz", "spec version"),
    ("suite-other-minor", _edit_metrics(suite_version=OTHER_MINOR), "", "suite version"),
    ("suite-other-major", _edit_metrics(suite_version=OTHER_MAJOR), "", "suite version"),
    ("suite-version-garbage", _edit_metrics(suite_version="latest"), "", "suite version"),
    ("suite-version-missing", _edit_metrics(suite_version=DELETE), "", "suite version"),
    ("metrics-not-a-mapping", _replace_text("metrics.json", "[1, 2]\n"), "metrics.json",
     "a JSON object"),
    ("metrics-non-utf8", lambda folder, runs: (folder / "metrics.json").write_bytes(b"\xff{"),
     "metrics.json", "JSON"),
    ("steps-run-edited", _edit_metrics(steps_run=3), "history.csv", "rows"),
]


def _damaged_copy(runs: dict, tmp_path: Path, damage) -> Path:
    folder = tmp_path / "damaged"
    shutil.copytree(runs["a"], folder)
    damage(folder, runs)
    return folder


@pytest.mark.parametrize(("damage", "subject", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_damaged_run_folder_is_rejected(runs, tmp_path, capsys, reliability, damage, subject,
                                        fragment):
    folder = _damaged_copy(runs, tmp_path, damage)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    reliability["faults injected"] += 1
    with pytest.raises(RunFolderError) as err:
        read_run(folder)
    message = str(err.value)
    assert "\n" not in message and str(folder) in message
    assert subject in message and fragment in message, message
    # hrta compare: one line, exit 2, in either position
    for argv in (["compare", str(runs["a"]), str(folder)],
                 ["compare", str(folder), str(runs["a"])]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.splitlines() == [f"hrta: error: {message}"]
    # the batch runner retrains it instead of reusing it
    run = Run("a", "eval", "numpy", parse_spec(SPEC), {})
    assert not is_complete(folder, run)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # only read, never fixed


def test_intact_folder_and_patch_releases_are_accepted(runs, tmp_path):
    """The control: the same checks pass on the undamaged folder and on a patch release."""
    assert read_run(runs["a"]).metrics["suite_version"] == __version__
    assert is_complete(runs["a"], Run("a", "eval", "numpy", parse_spec(SPEC), {}))
    folder = _damaged_copy(runs, tmp_path,
                           _edit_metrics(suite_version=f"{MAJOR}.{MINOR}.{PATCH + 7}"))
    assert read_run(folder).metrics["suite_version"] == f"{MAJOR}.{MINOR}.{PATCH + 7}"


@pytest.mark.parametrize(("found", "ok"), [
    (__version__, True), (f"{MAJOR}.{MINOR}.{PATCH + 1}", True), (f"{MAJOR}.{MINOR}", True),
    (OTHER_MINOR, False), (OTHER_MAJOR, False), ("", False), (None, False), (1.0, False),
    ("0.x.1", False)])
def test_suite_compatibility_rule(found, ok):
    assert suite_compatible(found) is ok


# ---------------------------------------------------------------------------- the aggregate step


def _plan_and_manifest(tmp_path: Path, folder: Path, spec_doc: dict) -> tuple[Path, Path]:
    spec = parse_spec(spec_doc)
    run = Run("r0", "eval", "numpy", spec, {"task": "sin1d"})
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"grid": "g", "runs": [{**run.to_dict(), "batch": 0}]}))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"phase": "eval", "backend": "numpy", "skipped": [],
                                    "runs": [{"run_id": "r0", "run_dir": str(folder)}]}))
    return plan, manifest


@pytest.mark.parametrize("case", ["inputs-truncated-0", "history-missing-middle-row",
                                  "params-of-another-run", "suite-other-minor",
                                  "metrics-spec-version-2"])
def test_aggregate_refuses_damaged_folders(runs, tmp_path, reliability, case):
    damage = {c[0]: c[1] for c in CASES}[case]
    folder = _damaged_copy(runs, tmp_path, damage)
    plan, manifest = _plan_and_manifest(tmp_path, folder, SPEC)
    reliability["faults injected"] += 1
    with pytest.raises(AggregateError, match=r"run r0: .*not merged"):
        build_tables([plan], [manifest], "g", [0.1])


def test_aggregate_refuses_a_folder_of_another_spec(runs, tmp_path, reliability):
    """A complete, valid folder in the place of a planned run of another spec is not merged
    under the plan's labels."""
    plan, manifest = _plan_and_manifest(tmp_path, runs["b"], SPEC)
    reliability["faults injected"] += 1
    with pytest.raises(AggregateError, match="run r0: .*another spec.*not merged"):
        build_tables([plan], [manifest], "g", [0.1])
    plan, manifest = _plan_and_manifest(tmp_path, runs["a"], SPEC)
    results, histories, skipped = build_tables([plan], [manifest], "g", [0.1])
    assert list(results["run_id"]) == ["r0"] and skipped == []
    assert len(histories) == len(read_run(runs["a"]).history["step"])
