"""Tidy tables of a pipeline's runs (pandas), written atomically as parquet.

* ``results.parquet``: one row per run (tuning and evaluation, every backend): the plan's labels
  (task, method, family, optimizer, optimizer_label, schedule, lr, width, seed, backend, dtype,
  ...), final metrics, steps and seconds to each loss threshold, divergence, times, provenance.
* ``histories.parquet``: every logged step of every run: run_id, step, s, lr, train_loss.

``steps_to_<t>`` is the first logged step whose training loss is at or below t (missing when
never reached: the resolution is the grid's ``log_every``); ``seconds_to_<t>`` is that step's
share of the run's training time, train_seconds * step / steps_run (compile time excluded).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from hrta import atomic
from hrta.atomic import plain, write_json  # noqa: F401  (re-exported: callers import them here)

LABELS = ("task", "method", "family", "optimizer", "optimizer_label", "schedule", "lr",
          "lr_index", "width", "n_train", "seed", "dtype", "batch_size", "steps")
METRICS = ("train_loss", "initial_train_loss", "test_mse", "test_rel_l2", "diverged",
           "diverged_step", "steps_run", "compile_seconds", "train_seconds", "wall_seconds",
           "us_per_step", "spec_digest", "suite_version", "spec_version", "device")
INT_COLUMNS = ("lr_index", "batch_size", "diverged_step", "width", "n_train", "seed", "steps",
               "steps_run", "spec_version")


REMEDY = ("delete the batch manifest under batches/ that lists it, and rerun the pipeline to "
          "retrain it")


class AggregateError(ValueError):
    """Runs missing from the manifests, or run folders that are damaged or foreign (rejected
    by hrta.run.read_run, or of another spec than the plan's): never merged."""


def threshold_name(threshold: float) -> str:
    """Column suffix of a loss threshold: 0.01 -> '1e-02', 0.005 -> '5e-03'."""
    return f"{threshold:.0e}"


def steps_to(steps: np.ndarray, losses: np.ndarray, threshold: float) -> int | None:
    """First logged step with loss <= threshold, or None."""
    with np.errstate(invalid="ignore"):
        hits = np.flatnonzero(np.isfinite(losses) & (losses <= threshold))
    return int(steps[hits[0]]) if hits.size else None


def load_plans(paths: Iterable[Path | str]) -> dict[str, dict]:
    """run_id -> plan entry, over the plan files of every phase."""
    entries = {}
    for path in paths:
        for entry in json.loads(Path(path).read_text())["runs"]:
            entries[entry["run_id"]] = entry
    return entries


def load_manifests(paths: Iterable[Path | str]) -> tuple[list[dict], list[dict]]:
    """(runs, skipped) over the batch manifests: runs carry run_id and run_dir."""
    runs, skipped = [], []
    for path in paths:
        manifest = json.loads(Path(path).read_text())
        runs += manifest["runs"]
        skipped += [{**s, "phase": manifest["phase"], "backend": manifest["backend"]}
                    for s in manifest["skipped"]]
    return runs, skipped


def result_row(folder, entry: Mapping, grid: str, thresholds: list[float]) -> dict:
    """One results row from a read run folder (hrta.run.RunFolder) and its plan entry."""
    m = folder.metrics
    labels = entry["labels"]
    row = {"run_id": entry["run_id"], "grid": grid, "phase": entry["phase"],
           "backend": entry["backend"], **{k: labels.get(k) for k in LABELS},
           "studies": ",".join(entry.get("studies", ()))}
    row.update({k: m.get(k) for k in METRICS})
    steps = folder.history["step"]
    losses = folder.history["train_loss"]
    per_step = (m["train_seconds"] / m["steps_run"]) if m.get("steps_run") else math.nan
    for thr in thresholds:
        hit = steps_to(steps, losses, thr)
        row[f"steps_to_{threshold_name(thr)}"] = hit
        row[f"seconds_to_{threshold_name(thr)}"] = None if hit is None else hit * per_step
    row.update({"git_commit": m.get("commit"), "git_dirty": m.get("dirty"),
                "versions": json.dumps(m.get("versions", {}), sort_keys=True),
                "cpu": (m.get("host") or {}).get("cpu"), "run_dir": str(folder.path)})
    return row


def build_tables(plan_paths: Iterable[Path | str], manifest_paths: Iterable[Path | str],
                 grid: str, thresholds: list[float]) -> tuple[pd.DataFrame, pd.DataFrame,
                                                              list[dict]]:
    """(results, histories, skipped) of every run the plans list. Raises AggregateError when a
    planned run is neither in a manifest nor skipped, or its folder does not read back."""
    from hrta.run import RunFolderError, read_run

    plans = load_plans(plan_paths)
    runs, skipped = load_manifests(manifest_paths)
    listed = {r["run_id"]: r for r in runs}
    skipped_ids = {s["run_id"] for s in skipped}
    missing = sorted(set(plans) - set(listed) - skipped_ids)
    if missing:
        raise AggregateError(f"{len(missing)} planned runs are in no batch manifest, e.g. "
                             f"{missing[0]}")
    rows, histories = [], []
    for run_id in sorted(listed, key=lambda r: (plans[r]["phase"], plans[r]["backend"], r)):
        if run_id not in plans:
            continue
        try:
            folder = read_run(listed[run_id]["run_dir"])
        except (RunFolderError, ValueError, OSError) as err:
            raise AggregateError(f"run {run_id}: {err}; not merged ({REMEDY})") from None
        planned = plans[run_id]
        if (folder.metrics.get("spec_digest") != planned["spec_digest"]
                or folder.metrics.get("backend") != planned["backend"]):
            raise AggregateError(f"run {run_id}: {folder.path} holds another spec or backend "
                                 f"than the plan's; not merged ({REMEDY})")
        rows.append(result_row(folder, plans[run_id], grid, thresholds))
        h = folder.history
        histories.append(pd.DataFrame({"run_id": run_id, "step": h["step"], "s": h["s"],
                                       "lr": h["lr"], "train_loss": h["train_loss"]}))
    results = pd.DataFrame(rows)
    for col in INT_COLUMNS:
        if col in results:
            results[col] = results[col].astype("Int64")
    for thr in thresholds:
        col = f"steps_to_{threshold_name(thr)}"
        if col in results:
            results[col] = results[col].astype("Int64")
    history = (pd.concat(histories, ignore_index=True) if histories else
               pd.DataFrame({"run_id": pd.Series(dtype=str), "step": pd.Series(dtype="int64"),
                             "s": pd.Series(dtype=float), "lr": pd.Series(dtype=float),
                             "train_loss": pd.Series(dtype=float)}))
    return results, history, skipped


def write_parquet(frame: pd.DataFrame, path: Path | str) -> None:
    """Write a table atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, buffer.getvalue())


