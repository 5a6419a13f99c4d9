"""The pipeline's theory stage as tables: :mod:`hrta.theory` applied to a grid's tasks and runs.

* :func:`spectrum_table`: the closed-form NTK's lambda_min, lambda_max and condition number per
  (task, s) on each task's training inputs, with the s^2 check per task;
* :func:`width_table`: the empirical NTK at initialisation, from one backend's autodiff, against
  the closed form, per (task, width, seed), with the width-slope check per task;
* :func:`rates_table`: predicted against measured per-step GD rates on every constant (s, lr)
  segment of every full-batch gradient-descent evaluation run.

Training inputs are those of the grid's first evaluation seed (one-dimensional tasks train on
the same equispaced points whatever the seed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from hrta import theory
from hrta.grid import Grid


def _settings(grid: Grid) -> dict:
    return grid["theory"] or {}


def _inputs(grid: Grid, task: str):
    return theory.task_train_inputs(task, grid["n_train"], grid["evaluation"]["seeds"][0])


def spectrum_table(grid: Grid) -> tuple[pd.DataFrame, dict]:
    """(rows task, s, lambda_min, lambda_max, condition, lambda_min_over_s2, s2_share;
    {task: s^2 check without its table})."""
    s_values = _settings(grid).get("s_values", list(theory.DEFAULT_S_GRID))
    rows, checks = [], {}
    for task in grid["tasks"]:
        X = _inputs(grid, task)
        for row in theory.lambda_min_vs_s(X, s_values, grid["train"]):
            rows.append({"task": task, **row})
        fitted = [s for s in s_values if theory.DEFAULT_FIT_RANGE[0] <= s
                  <= theory.DEFAULT_FIT_RANGE[1] and s > 0]
        if len(fitted) >= 3:
            check = theory.s_squared_check(X, s_values, grid["train"])
            checks[task] = {k: v for k, v in check.items() if k != "table"}
        else:
            checks[task] = {"verdict": "inconclusive",
                            "rule": "needs at least 3 s values in [0.5, 2]"}
    return pd.DataFrame(rows), checks


def width_table(grid: Grid, backend_name: str, *, missing: str = "fail",
                ) -> tuple[pd.DataFrame, dict]:
    """(rows task, backend, s, dtype, width, seed, rel_error; {"checks": {task: width-slope
    check}, "skipped": reason or None}) for one backend, on the first ``theory.ntk_points``
    training points of each of ``theory.tasks``."""
    from hrta.backends import require_backend
    from hrta.backends.base import BackendUnavailable
    from hrta.backends.registry import BrokenBackend

    settings = _settings(grid)
    columns = ["task", "backend", "s", "dtype", "width", "seed", "rel_error"]
    try:
        backend = require_backend(backend_name)
    except (BackendUnavailable, BrokenBackend) as err:
        if missing == "fail":
            raise
        return pd.DataFrame(columns=columns), {"checks": {}, "skipped": str(err)}
    s = settings.get("ntk_s", 1.0)
    dtype = settings.get("ntk_dtype", "float64")
    points = settings.get("ntk_points") or grid["n_train"]
    rows, checks = [], {}
    for task in settings.get("tasks", grid["tasks"]):
        X = _inputs(grid, task)[:points]
        found = theory.width_convergence(
            X, s, settings.get("ntk_widths", [64, 256, 1024]), settings.get("ntk_seeds", [0]),
            grid["train"], backend=backend, dtype=dtype, init_a=grid["init_a"])
        rows += [{"task": task, "backend": backend_name, "s": s, "dtype": dtype, **r}
                 for r in found]
        checks[task] = theory.width_slope(found)
    return pd.DataFrame(rows, columns=columns), {"checks": checks, "skipped": None}


def is_plain_gd(spec) -> bool:
    """Full-batch gradient descent: the setting of the rate prediction."""
    return (spec.optimizer.name == "sgd" and spec.optimizer.momentum == 0
            and spec.batch_size is None)


def rates_table(plan_path: Path | str, manifest_paths: Iterable[Path | str]) -> pd.DataFrame:
    """Rows run_id, backend, task, method, width, seed, stage, k0, k1, s, lr, lambda_min,
    lambda_max, predicted_rate, measured_rate, kappa_predicted, kappa_measured, kappa_ratio,
    note: every constant segment of every full-batch GD evaluation run that finished."""
    from hrta.aggregate import load_manifests
    from hrta.run import read_run
    from hrta.spec import parse_spec

    plan = json.loads(Path(plan_path).read_text())
    done, _ = load_manifests(manifest_paths)
    folders = {r["run_id"]: r["run_dir"] for r in done}
    rows = []
    for entry in plan["runs"]:
        if entry["run_id"] not in folders or not is_plain_gd(parse_spec(entry["spec"])):
            continue
        run = read_run(folders[entry["run_id"]])
        if run.metrics.get("diverged"):
            continue
        labels = entry["labels"]
        for stage, seg in enumerate(theory.run_stage_rates(run)):
            rows.append({"run_id": entry["run_id"], "backend": entry["backend"],
                         "task": labels["task"], "method": labels["method"],
                         "schedule": labels["schedule"], "width": labels["width"],
                         "seed": labels["seed"], "dtype": labels["dtype"], "stage": stage,
                         **{k: seg[k] for k in ("k0", "k1", "s", "lr", "lambda_min",
                                                "lambda_max", "predicted_rate", "measured_rate",
                                                "kappa_predicted", "kappa_measured",
                                                "kappa_ratio", "note")}})
    columns = ["run_id", "backend", "task", "method", "schedule", "width", "seed", "dtype",
               "stage", "k0", "k1", "s", "lr", "lambda_min", "lambda_max", "predicted_rate",
               "measured_rate", "kappa_predicted", "kappa_measured", "kappa_ratio", "note"]
    table = pd.DataFrame(rows, columns=columns)
    for col in ("measured_rate", "kappa_measured", "kappa_ratio"):
        table[col] = table[col].astype(float)
    return table


def write_width_check(grid: Grid, backend_name: str, table_path: Path | str,
                      checks_path: Path | str, *, missing: str = "fail") -> str:
    """:func:`width_table` written to ``table_path`` (parquet) and ``checks_path`` (JSON);
    returns a one-line summary for the job's log."""
    from hrta.aggregate import write_json, write_parquet

    table, checks = width_table(grid, backend_name, missing=missing)
    write_parquet(table, table_path)
    write_json(checks, checks_path)
    verdicts = {task: c["verdict"] for task, c in checks["checks"].items()}
    return f"empirical NTK of {backend_name}: {len(table)} rows {verdicts}"
