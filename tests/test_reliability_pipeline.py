"""The Snakemake pipeline under faults (issue 7, items 2, 3, 5 and 6; all slow).

One small grid derived from benchmarks/smoke.yaml (one task, two methods, full-batch GD tuned
over 0.01..1000, so that the large learning rates diverge) runs end to end with torch, jax and
tensorflow made uninstalled (a sitecustomize hook in the subprocesses) and
``missing_backends=skip``: the runs stay on NumPy, whatever frameworks this machine has, and
the whole module takes a few pipeline runs of ~20 s each on an idle machine.

* missing backends: the pipeline runs the others; skipped.json and the report name each skipped
  backend with its install command; with ``missing_backends=fail`` it stops, saying how to
  install the framework;
* divergence: diverged tuning runs are in the results table with the step they diverged at, the
  pipeline goes on, tuning and the report's statistics treat them by their stated rules;
* interruption: SIGKILL to the whole pipeline (Snakemake and its jobs) at a random point; every
  output visible afterwards is complete, ``snakemake --unlock`` and a rerun finish the work
  without retraining a finished run, and the tables equal an uninterrupted run's (timings
  aside);
* repeatability: a second run in a fresh folder gives the same tables bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from reliability_support import REPO, SMOKE_GRID, SNAKEMAKE, uninstalled_env

from hrta.report.claims import final_log_loss
from hrta.run import RunFolderError, read_run
from hrta.tuning import RULE_TEXT

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed")]

FRAMEWORKS = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}
GRID_NAME = "reliability"
KILL_SEED = 7
# Columns that measure time or name this checkout's folders, not results.
NOT_RESULTS = ("compile_seconds", "train_seconds", "wall_seconds", "us_per_step", "run_dir",
               "git_commit", "git_dirty")


def _grid(path: Path) -> Path:
    doc = yaml.safe_load(SMOKE_GRID.read_text())
    doc.update({
        "description": "reliability tests: the smoke grid cut to one task and two methods, "
                       "tuned over learning rates up to 1000 (some diverge)",
        "tasks": ["sin1d"], "methods": ["relu", "homotopy"],
        "optimizers": {"gd": {"name": "sgd"}}, "schedules": {"constant": {"name": "constant"}},
        "baseline_schedules": ["constant"], "hrta_schedules": ["constant"],
        "runs_per_job": 20, "width_sweep": None, "theory": None,
        "agreement": {"backends": ["numpy", *FRAMEWORKS], "dtypes": ["float64"]},
    })
    doc["tuning"] = {**doc["tuning"], "lr_count": 5, "lr_range": {"gd": [0.01, 1000.0]}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Pipeline:
    """Runs the workflow in its own working directory (its own .snakemake, locks, results)."""

    def __init__(self, root: Path, grid: Path, missing: str = "skip"):
        self.root = root
        self.env = uninstalled_env(root.parent, list(FRAMEWORKS))
        self.command = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"),
                        "-d", str(root), "-c2", "--config", f"grid={grid}",
                        f"missing_backends={missing}"]

    @property
    def out(self) -> Path:
        return self.root / "results" / GRID_NAME

    def run(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, *extra], env=self.env, capture_output=True,
                              text=True, timeout=900)

    def start(self) -> subprocess.Popen:
        """In a new session, so that one killpg reaches Snakemake and every job it started."""
        log = open(self.root.parent / f"{self.root.name}.log", "w")  # noqa: SIM115
        return subprocess.Popen(self.command, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    return _grid(tmp_path_factory.mktemp("grid") / f"{GRID_NAME}.yaml")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, grid) -> tuple[Pipeline, float]:
    pipeline = Pipeline(tmp_path_factory.mktemp("a") / "wd", grid)
    started = time.monotonic()
    proc = pipeline.run()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return pipeline, time.monotonic() - started


def _tables(pipeline: Pipeline) -> dict[str, pd.DataFrame]:
    out = {}
    for name in ("results", "histories", "selection"):
        frame = pd.read_parquet(pipeline.out / f"{name}.parquet")
        out[name] = frame.drop(columns=[c for c in frame.columns
                                        if c in NOT_RESULTS or c.startswith("seconds_to_")])
    return out


def _assert_same_tables(a: Pipeline, b: Pipeline) -> None:
    ta, tb = _tables(a), _tables(b)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_exact=True, obj=name)


# ---------------------------------------------------------------------------- missing backends


def test_skipped_backends_are_named_with_their_install_command(uninterrupted):
    pipeline, _ = uninterrupted
    skipped = json.loads((pipeline.out / "skipped.json").read_text())
    assert sorted(skipped["missing_backends"]) == sorted(FRAMEWORKS)
    for name, reason in skipped["missing_backends"].items():
        assert f"pip install 'hrta-bench[{name}]'" in reason, reason
    results = pd.read_parquet(pipeline.out / "results.parquet")
    assert set(results["backend"]) == {"numpy"} and len(results) > 0
    report = (pipeline.out / "report.html").read_text()
    for name in FRAMEWORKS:
        assert f"hrta-bench[{name}]" in report, f"the report does not say {name} was skipped"


def test_missing_backend_fails_by_default_with_install_command(uninterrupted, grid, tmp_path):
    pipeline = Pipeline(tmp_path / "wd", grid, missing="fail")
    proc = pipeline.run("-n")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "pip install 'hrta-bench[torch]'" in output and "missing_backends=skip" in output
    assert "Traceback" not in output
    assert not pipeline.out.exists()


# ---------------------------------------------------------------------------- divergence


def test_diverged_runs_are_recorded_and_the_pipeline_goes_on(uninterrupted):
    pipeline, _ = uninterrupted
    results = pd.read_parquet(pipeline.out / "results.parquet")
    histories = pd.read_parquet(pipeline.out / "histories.parquet")
    diverged = results[results["diverged"]]
    assert len(diverged) > 0 and (diverged["phase"] == "tune").all()
    for _, row in diverged.iterrows():
        steps = histories.loc[histories["run_id"] == row["run_id"], "step"]
        assert 0 <= row["diverged_step"] < row["steps"]
        assert steps.max() == row["diverged_step"] == row["steps_run"]
        assert pd.isna(row["train_loss"])
    # tuning: a diverged candidate never wins, and the rule says so in the table
    selection = pd.read_parquet(pipeline.out / "selection.parquet")
    chosen = selection[selection["chosen"]]
    assert (chosen["n_diverged"] == 0).all()
    assert set(selection["rule_text"]) == {RULE_TEXT.format(rule="median_final_train_loss")}
    assert "diverged" in RULE_TEXT
    # the report's statistics: a diverged run scores its initial loss (hrta.report.claims)
    scores = final_log_loss(diverged)
    expected = np.log10(diverged["initial_train_loss"].astype("float64"))
    pd.testing.assert_series_equal(scores, expected, check_names=False)
    # the evaluation ran at the chosen learning rates
    assert (results["phase"] == "eval").sum() > 0


# ---------------------------------------------------------------------------- interruption


def _visible_outputs(pipeline: Pipeline) -> dict[str, bytes]:
    """Every finished run folder (by path -> its files' bytes) after checking that everything
    visible reads back complete: run folders, batch manifests, parquet tables, JSON files."""
    folders = {}
    runs = pipeline.out / "runs"
    for folder in sorted(runs.glob("*/*/*")) if runs.exists() else []:
        if folder.name.startswith("."):
            continue  # a staging folder of a killed write: hidden, never read
        try:
            read_run(folder)
        except RunFolderError as err:
            pytest.fail(f"a visible run folder is not complete: {err}")
        folders[str(folder.relative_to(pipeline.out))] = b"".join(
            p.read_bytes() for p in sorted(folder.iterdir()))
    for path in sorted(pipeline.out.rglob("*.json")) if pipeline.out.exists() else []:
        if not any(part.startswith(".") for part in path.relative_to(pipeline.out).parts):
            json.loads(path.read_text())  # raises on a partial file
    for path in sorted(pipeline.out.glob("*.parquet")) if pipeline.out.exists() else []:
        pd.read_parquet(path)
    return folders


def test_sigkill_of_the_running_pipeline_then_resume(uninterrupted, grid, tmp_path,
                                                     reliability):
    reference, duration = uninterrupted
    pipeline = Pipeline(tmp_path / "wd", grid)
    kill_at = random.Random(KILL_SEED).uniform(0.2, 0.8) * duration
    proc = pipeline.start()
    time.sleep(kill_at)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    reliability["faults injected"] += 1
    for _ in range(100):  # every job of the group is gone before anything is read
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("processes of the killed pipeline are still running")
    finished = _visible_outputs(pipeline)
    # the documented way back: unlock (the kill left Snakemake's lock), then run again
    unlock = pipeline.run("--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = pipeline.run()
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = _visible_outputs(pipeline)
    lost = [path for path, data in finished.items() if after.get(path) != data]
    reliability["results lost"] += len(lost)
    assert lost == [], f"finished runs were lost or retrained: {lost}"
    _assert_same_tables(reference, pipeline)


# ---------------------------------------------------------------------------- repeatability


def test_fresh_rerun_reproduces_the_tables_bit_for_bit(uninterrupted, grid, tmp_path):
    reference, _ = uninterrupted
    pipeline = Pipeline(tmp_path / "wd", grid)
    proc = pipeline.run()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _assert_same_tables(reference, pipeline)
    results = pd.read_parquet(pipeline.out / "results.parquet")
    assert not results.empty and set(results["phase"]) == {"tune", "eval"}
