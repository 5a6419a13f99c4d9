"""The pipeline on a real SLURM cluster: a single-node one that tests/slurm/cluster.sh stands up
on this machine from Debian's packages (see that script for what it installs and writes).

The session fixture starts munged, slurmctld and slurmd and stops exactly those daemons at the
end. It skips, with the reason, where SLURM cannot be started (not root, no apt-get, an existing
SLURM configuration it must not touch) or when HRTA_SKIP_SLURM=1 is set; anywhere else (CI runs
as root on Debian 12) a cluster that fails to come up fails the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
START_LIMIT_S = 300  # apt-get install (about 25 s here) plus daemon start (about 1 s)


def cannot_start_reason() -> str | None:
    """Why no SLURM cluster can be started here, or None when it can."""
    if os.environ.get("HRTA_SKIP_SLURM") == "1":
        return "HRTA_SKIP_SLURM=1 is set"
    if not sys.platform.startswith("linux"):
        return f"needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return f"needs root to install and start the SLURM daemons (uid is {os.geteuid()})"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def test_cannot_start_reason_names_why(monkeypatch):
    """The skip reasons: explicit opt-out first, then not root, then nothing to install with."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("HRTA_SKIP_SLURM", raising=False)
    assert "needs root" in cannot_start_reason()
    monkeypatch.setenv("HRTA_SKIP_SLURM", "1")
    assert cannot_start_reason() == "HRTA_SKIP_SLURM=1 is set"
    monkeypatch.setenv("HRTA_SKIP_SLURM", "0")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cannot_start_reason() == "SLURM is not installed and there is no apt-get to install it"
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert cannot_start_reason() is None


def cluster(command: str, limit_s: int) -> subprocess.CompletedProcess:
    return subprocess.run(["timeout", "-k", "10", str(limit_s), str(CLUSTER), command],
                          capture_output=True, text=True)


def wait_for_job(job: str, limit_s: float) -> str:
    """Poll squeue until batch job ``job`` has ended; its final state (e.g. COMPLETED).
    (``sbatch --wait`` polls every 10 s; this answers within a fraction of a second.)"""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"],
                               capture_output=True, text=True, check=True).stdout.strip()
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"SLURM job {job} still not finished after {limit_s} s")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM cluster; yields the seconds its start took."""
    reason = cannot_start_reason()
    if reason:
        pytest.skip(f"local SLURM cluster not started: {reason}")
    started = time.perf_counter()
    proc = cluster("start", START_LIMIT_S)
    if proc.returncode == 3:  # the script's "cannot set up SLURM here"
        pytest.skip(f"local SLURM cluster not started: {proc.stderr.strip().splitlines()[-1]}")
    if proc.returncode != 0:
        cluster("stop", 120)
        pytest.fail(f"tests/slurm/cluster.sh start failed (exit {proc.returncode}):\n"
                    f"{proc.stdout}{proc.stderr}")
    try:
        yield time.perf_counter() - started
    finally:
        stopped = cluster("stop", 120)
        assert stopped.returncode == 0, f"cluster.sh stop failed:\n{stopped.stderr}"


def test_cluster_matches_this_node_and_runs_a_job(slurm_cluster, tmp_path):
    """The node advertises this machine's CPUs, is idle, and a batch job runs on it."""
    sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %T %P"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert sinfo == [str(os.cpu_count()), "idle", "main*"]
    out = tmp_path / "job.out"
    job = subprocess.run(["sbatch", "--parsable", "-o", str(out), "--wrap",
                          "echo job $SLURM_JOB_ID on $SLURMD_NODENAME"],
                         check=True, capture_output=True, text=True).stdout.strip()
    assert wait_for_job(job, limit_s=60) == "COMPLETED"
    assert out.read_text().split() == ["job", job, "on", os.uname().nodename]


# ---- the smoke grid through SLURM, against a local run -----------------------------------------

SNAKEMAKE_LIMIT_S = 900  # per pipeline run; CI's unloaded 2-core machine needs far less
# Columns that differ between two runs of the same code: times, where a run's folder is, and
# the checkout's state (a test run while someone edits the tree sees it change).
NOT_COMPARED = ("run_dir", "us_per_step", "git_commit", "git_dirty")


class Snakemake:
    """Snakemake running in the repository, under ``timeout -k`` (Snakemake may ignore SIGTERM
    while it believes SLURM jobs are running); stdout and stderr go to ``log``."""

    def __init__(self, args: list[str], log: Path):
        self.command = ["timeout", "-k", "15", str(SNAKEMAKE_LIMIT_S), sys.executable, "-m",
                        "snakemake", *args]
        self.log = log
        with open(log, "w") as handle:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=handle,
                                         stderr=subprocess.STDOUT)

    def finish(self) -> str:
        """Wait for the end; the log's text, or the test fails with the log's tail."""
        returncode = self.proc.wait()
        text = self.log.read_text()
        if returncode != 0:
            tail = "\n".join(text.splitlines()[-40:])
            pytest.fail(f"{' '.join(self.command)} exited {returncode}:\n{tail}")
        return text

    def stop(self) -> None:
        """End it if it still runs (``timeout`` passes SIGTERM on, then kills)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without its timing and location columns (rows keep their order: the pipeline
    writes them in plan order, so it is part of what must be reproduced)."""
    return table.drop(columns=[c for c in table.columns if "seconds" in c or c in NOT_COMPARED])


@pytest.mark.slow
def test_smoke_grid_on_slurm_equals_local_run(slurm_cluster, tmp_path):
    """The smoke grid submitted through workflow/profiles/slurm produces the same tables as a
    local run: every parquet table of the grid, every number, timings aside."""
    # Separate parents: the report goes to the folder beside the results root (<parent>/reports).
    slurm_out, local_out = tmp_path / "slurm" / "results", tmp_path / "local" / "results"
    # The local run fills the SLURM run's idle time (queue and status-check waits): both at once.
    local = Snakemake(["--cores", "2", "--config", "grid=smoke", f"results={local_out}"],
                      tmp_path / "local.log")
    slurm = Snakemake(["--workflow-profile", str(PROFILE),
                       "--slurm-init-seconds-before-status-checks", "1",
                       "--seconds-between-status-checks", "1",
                       "--config", "grid=smoke", f"results={slurm_out}"], tmp_path / "slurm.log")
    try:
        log = slurm.finish()
        local.finish()
    finally:
        slurm.stop()
        local.stop()
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) >= 5, f"expected the jobs to go through SLURM:\n{log[-3000:]}"
    assert "Group job select" in log, "the profile's groups were not applied"

    local_tables = sorted(p.relative_to(local_out) for p in local_out.glob("smoke/**/*.parquet")
                          if "runs" not in p.relative_to(local_out).parts)
    slurm_tables = sorted(p.relative_to(slurm_out) for p in slurm_out.glob("smoke/**/*.parquet")
                          if "runs" not in p.relative_to(slurm_out).parts)
    assert slurm_tables == local_tables
    assert Path("smoke/results.parquet") in local_tables
    for name in local_tables:
        expected = comparable(pd.read_parquet(local_out / name))
        got = comparable(pd.read_parquet(slurm_out / name))
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=str(name))
