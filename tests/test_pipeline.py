"""The Snakemake pipeline itself: lint, dry runs of every grid, config validation, and the smoke
grid end to end (every table complete, a second run does nothing, ``snakemake --report`` works,
a lost run is redone alone).

Each test runs Snakemake in its own temporary working directory (``--directory``), so that its
outputs and Snakemake's metadata never touch the checkout's ``results/``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hrta.agreement import VERDICTS

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
GRIDS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.yaml"))
# Tests must not depend on every framework being installed; CI installs them all anyway.
SKIP = "missing_backends=skip"


def snakemake(workdir: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(SNAKEMAKE), "-s", str(SNAKEFILE), "--directory", str(workdir),
                           *args], capture_output=True, text=True, timeout=timeout)


def test_lint_is_clean(tmp_path):
    done = snakemake(tmp_path, "--lint", "--config", "grid=smoke", SKIP)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Congratulations, your workflow is in a good condition!" in done.stdout + done.stderr


@pytest.mark.parametrize("grid", GRIDS)
def test_dry_run_of_every_grid(tmp_path, grid):
    done = snakemake(tmp_path, "-n", "--cores", "2", "--config", f"grid={grid}", SKIP)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "This was a dry-run" in out
    for rule in ("plan_tune", "train", "select_learning_rates", "plan_eval", "aggregate",
                 "agreement"):
        assert f"{rule} " in out or f"rule {rule}:" in out, f"no {rule} job in the dry run"


def test_ntk_checks_run_in_the_first_evaluation_job_or_alone(tmp_path):
    """A theory backend that trains evaluation runs checks its NTK in its first evaluation job
    (rule train_with_ntk); one that does not gets a theory_ntk_width job."""
    grid = yaml.safe_load((ROOT / "benchmarks" / "smoke.yaml").read_text())
    grid["agreement"]["backends"] = ["numpy", "jax"]
    grid["theory"]["ntk_backends"] = ["numpy", "torch"]
    path = tmp_path / "ntk.yaml"
    path.write_text(yaml.safe_dump(grid))
    done = snakemake(tmp_path, "-n", "--cores", "2", "--config", f"grid={path}", SKIP)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    jobs = re.findall(r"rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)\n", out)
    ntk = {w for rule, w in jobs if rule == "train_with_ntk"}
    alone = {w for rule, w in jobs if rule == "theory_ntk_width"}
    trained = {w for rule, w in jobs if rule == "train" and "phase=eval" in w}
    assert ntk == {"backend=numpy"} and alone == {"backend=torch"}
    assert trained == {"phase=eval, backend=jax, batch=0"}


def test_config_typo_is_rejected_with_the_key_named(tmp_path):
    done = snakemake(tmp_path, "-n", "--config", "gird=smoke", SKIP)
    assert done.returncode == 2
    assert "hrta: error: config.gird: expected no such key (allowed: grid, missing_backends, " \
        "results, runs_per_job)" in done.stderr
    assert not (tmp_path / "results").exists()


def test_config_bad_value_is_rejected(tmp_path):
    done = snakemake(tmp_path, "-n", "--config", "grid=smoke", "missing_backends=maybe")
    assert done.returncode == 2
    assert "config.missing_backends: expected one of fail, skip, got 'maybe'" in done.stderr


def test_grid_typo_is_rejected_with_the_field_named(tmp_path):
    grid = (ROOT / "benchmarks" / "smoke.yaml").read_text().replace("tuning:", "tunning:")
    path = tmp_path / "typo.yaml"
    path.write_text(grid)
    done = snakemake(tmp_path, "-n", "--config", f"grid={path}", SKIP)
    assert done.returncode == 2
    assert "hrta: error: typo.tunning: expected no such key" in done.stderr


def _planned(out: Path) -> dict[str, dict]:
    runs = {}
    for phase in ("tune", "eval"):
        for entry in json.loads((out / "plan" / f"{phase}.json").read_text())["runs"]:
            runs[entry["run_id"]] = entry
    return runs


@pytest.mark.slow
def test_smoke_grid_end_to_end_then_nothing_to_do_then_resume(tmp_path):
    done = snakemake(tmp_path, "--cores", "2", "--config", "grid=smoke", SKIP, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    out = tmp_path / "results" / "smoke"
    planned = _planned(out)
    skipped = json.loads((out / "skipped.json").read_text())
    missing_backends = set(skipped["missing_backends"])
    expected = {r for r, e in planned.items() if e["backend"] not in missing_backends}

    results = pd.read_parquet(out / "results.parquet")
    assert set(results["run_id"]) == expected and len(results) == len(expected)
    for column in ("run_id", "grid", "phase", "task", "method", "family", "optimizer",
                   "optimizer_label", "schedule", "lr", "width", "n_train", "seed", "backend",
                   "dtype", "batch_size", "steps", "train_loss", "initial_train_loss",
                   "test_mse", "test_rel_l2", "steps_to_1e-01", "seconds_to_1e-01",
                   "steps_to_1e-02", "diverged", "diverged_step", "compile_seconds",
                   "train_seconds", "wall_seconds", "us_per_step", "spec_digest",
                   "suite_version", "spec_version", "git_commit", "versions", "run_dir"):
        assert column in results.columns, column
    assert set(results["phase"]) == {"tune", "eval"}
    assert set(results["family"]) == {"hrta", "baseline"}

    histories = pd.read_parquet(out / "histories.parquet")
    assert set(histories["run_id"]) == expected
    assert list(histories.columns) == ["run_id", "step", "s", "lr", "train_loss"]

    selection = pd.read_parquet(out / "selection.parquet")
    chosen = selection[selection["chosen"]]
    cells = chosen[["task", "method", "optimizer_label", "schedule"]]
    assert len(chosen) == len(cells.drop_duplicates()) == len(selection) // 5
    evals = results[results["phase"] == "eval"].merge(
        chosen[["task", "method", "optimizer_label", "schedule", "lr"]],
        on=["task", "method", "optimizer_label", "schedule"], suffixes=("", "_chosen"))
    assert (evals["lr"] == evals["lr_chosen"]).all()

    agreement = pd.read_parquet(out / "agreement.parquet")
    summary = json.loads((out / "agreement.json").read_text())
    others = results[(results["phase"] == "eval") & (results["backend"] != "numpy")]
    assert set(agreement["run_id"]) == set(others["run_id"])
    assert not summary["not_compared"]
    assert summary["compared"] == len(agreement)
    assert summary["failed"] == int((~agreement["passed"]).sum())
    # float64 is the suite's agreement contract (1e-9); float32 verdicts are reported, and held
    # per backend by the conformance suite, not here
    f64 = agreement[agreement["dtype"] == "float64"]
    assert len(f64) and f64["passed"].all(), summary["failures"]
    assert (f64["verdict"] == "within bound").all()  # the noise rule is for float32 only
    assert f64["rounding_noise_loss"].isna().all()
    f32 = agreement[agreement["dtype"] == "float32"]
    assert len(f32) and f32["rounding_noise_loss"].notna().all()  # both dtypes are in the grid
    assert set(agreement["verdict"]) <= set(VERDICTS)
    assert (agreement["passed"] == (agreement["verdict"] != "disagrees")).all()
    assert (agreement["passed_bound"] == (agreement["verdict"] == "within bound")).all()
    assert summary["within_rounding_noise"] == int((agreement["verdict"]
                                                    == "within rounding noise").sum())
    assert (agreement["max_rel_loss"] >= 0).all() and agreement["loss_rtol"].notna().all()

    theory = out / "theory"
    spectrum = pd.read_parquet(theory / "ntk_spectrum.parquet")
    assert set(spectrum["task"]) == {"sin1d", "franke2d"}
    assert {"lambda_min", "lambda_max", "condition"} <= set(spectrum.columns)
    width = pd.read_parquet(theory / "ntk_width.parquet")
    assert set(width["backend"]) == {"numpy", "torch", "jax", "tensorflow"} - missing_backends
    rates = pd.read_parquet(theory / "rates.parquet")
    assert {"run_id", "stage", "s", "predicted_rate", "measured_rate"} <= set(rates.columns)
    assert len(rates) and set(rates["run_id"]) <= set(results["run_id"])

    again = snakemake(tmp_path, "-n", "--cores", "2", "--config", "grid=smoke", SKIP)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr

    # Snakemake's own report of the finished run, with the captions of workflow/report/
    page = tmp_path / "snakemake-report.html"
    made = snakemake(tmp_path, "--config", "grid=smoke", SKIP, "--report", str(page))
    assert made.returncode == 0, (made.stdout + made.stderr)[-5000:]
    html = page.read_text()
    assert "Every run of the pipeline" in html  # workflow/report/results.rst
    assert "application/vnd.apache.parquet" in html and "assuming text/plain" not in made.stderr

    # as if killed while an evaluation batch ran: one of its runs, its manifest and the tables
    # are missing; the rerun trains that run alone and rebuilds the tables
    victim = results[(results["phase"] == "eval") & (results["backend"] == "numpy")].iloc[0]
    shutil.rmtree(tmp_path / victim["run_dir"])
    manifest = next((out / "batches" / "eval" / "numpy").glob("*.json"))
    manifest.unlink()
    (out / "results.parquet").unlink()
    tune_manifests = {p: p.stat().st_mtime_ns for p in (out / "batches" / "tune").rglob("*.json")}
    redo = snakemake(tmp_path, "--cores", "2", "--config", "grid=smoke", SKIP, timeout=600)
    assert redo.returncode == 0, (redo.stdout + redo.stderr)[-5000:]
    batch = json.loads(manifest.read_text())
    assert batch["trained"] == 1 and batch["reused"] == len(batch["runs"]) - 1
    after = pd.read_parquet(out / "results.parquet")
    assert len(after) == len(results)
    assert {p: p.stat().st_mtime_ns for p in tune_manifests} == tune_manifests
