"""The pipeline's agreement stage: every evaluation run of a backend other than the NumPy
reference, held against the reference run of the same spec (same dtype) with
:func:`hrta.compare.compare_pair` and the tolerances of :mod:`hrta.tolerances`.

One row per compared run: its labels, the largest relative and absolute train_loss deviation
over the logged steps, the largest normwise relative parameter deviation, the first step that
exceeded the tolerance (or diverged differently), the tolerances and whether it passed. Runs
without a reference run in the plan are listed as not compared, with the reason.

A float32 run whose dynamics amplify rounding (Adam's first steps, a learning rate near the
stability limit) can exceed the arithmetic bound of :mod:`hrta.tolerances` without any fault.
Such a run is measured against its own rounding noise instead: how far the float32 reference
strays from the float64 reference of the same spec. If the backend's float32 run is as accurate
as the reference's, the triangle inequality puts the two float32 runs within twice that noise
(:data:`hrta.tolerances.ROUNDING_NOISE_FACTOR`). Each row says which verdict applied
(``within bound``, ``within rounding noise``, ``disagrees``), so nothing is hidden: a row passes
by the bound, or by the measured noise of that very spec, or it fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from hrta.grid import REFERENCE_BACKEND
from hrta.tolerances import ROUNDING_NOISE_FACTOR

CASE_LABELS = ("task", "method", "family", "optimizer_label", "schedule", "lr", "width", "seed",
               "dtype")


def compare_folders(run_dir: str, reference_dir: str, cache: dict) -> dict:
    """The one call into hrta.compare: a run folder against its reference folder."""
    from hrta.compare import RunView, compare_pair
    from hrta.run import read_run

    if reference_dir not in cache:
        cache.clear()  # references are used by consecutive runs; keep one in memory
        cache[reference_dir] = RunView.from_folder(read_run(reference_dir))
    result = compare_pair(cache[reference_dir], RunView.from_folder(read_run(run_dir)))
    max_abs, max_rel, _ = result.worst
    params = result.params
    return {"max_rel_loss": max_rel, "max_abs_loss": max_abs,
            "max_rel_params": None if params is None else max(p.rel for p in params.values()),
            "first_exceed_step": result.first_bad_step,
            "loss_rtol": result.loss_tolerance.rtol, "loss_atol": result.loss_tolerance.atol,
            "params_rtol": result.params_tolerance.rtol,
            "tolerance": result.loss_tolerance.basis, "passed_bound": bool(result.ok),
            "divergence_differs": result.baseline_diverged != result.diverged,
            "problem": "" if result.ok else result.failure_message()}


VERDICTS = ("within bound", "within rounding noise", "disagrees")


def rounding_noise(ref32_dir: str, ref64_dir: str) -> tuple[float, float | None]:
    """How far the float32 reference run strays from the float64 reference run of the same
    spec: (largest relative train_loss deviation over the logged steps before either diverged,
    largest normwise relative final-parameter deviation, None when either diverged)."""
    import dataclasses

    from hrta.compare import RunView, compare_pair
    from hrta.run import read_run

    ref32 = RunView.from_folder(read_run(ref32_dir))
    exact = RunView.from_folder(read_run(ref64_dir))
    # The float64 trajectory held as the exact answer of the float32 spec.
    result = compare_pair(dataclasses.replace(exact, spec=ref32.spec), ref32)
    params = result.params
    return (result.worst[1],
            None if params is None else max(p.rel for p in params.values()))


def verdict(row: dict) -> str:
    """One of :data:`VERDICTS` for an agreement row (see the module docstring): the row's own
    tolerance first, then, for float32 rows with a measured rounding noise, the noise rule
    (same divergence step, train_loss and parameter deviations each within
    ROUNDING_NOISE_FACTOR times the reference's own float32 deviation)."""
    from hrta.tolerances import ROUNDING_NOISE_FACTOR

    if row["passed_bound"]:
        return "within bound"
    noise_loss, noise_params = row["rounding_noise_loss"], row["rounding_noise_params"]
    if noise_loss is None or row["divergence_differs"]:
        return "disagrees"
    loss_ok = row["max_rel_loss"] <= ROUNDING_NOISE_FACTOR * noise_loss
    params_ok = (row["max_rel_params"] is None if noise_params is None else
                 row["max_rel_params"] is not None
                 and row["max_rel_params"] <= ROUNDING_NOISE_FACTOR * noise_params)
    return "within rounding noise" if loss_ok and params_ok else "disagrees"


def agreement_table(plan_path: Path | str, manifest_paths: Iterable[Path | str],
                    ) -> tuple[pd.DataFrame, dict]:
    """(table, summary) over the evaluation plan's runs found in the manifests."""
    from hrta.aggregate import load_manifests

    plan = json.loads(Path(plan_path).read_text())
    done, skipped = load_manifests(manifest_paths)
    folders = {r["run_id"]: r["run_dir"] for r in done}
    reference = {}
    for entry in plan["runs"]:
        if entry["backend"] == REFERENCE_BACKEND and entry["run_id"] in folders:
            reference[entry["spec_digest"]] = entry["run_id"]
    noise: dict[str, tuple[float, float | None] | None] = {}  # float32 reference id -> noise
    rows, not_compared = [], []
    cache: dict = {}
    others = [e for e in plan["runs"] if e["backend"] != REFERENCE_BACKEND]
    others.sort(key=lambda e: (e["spec_digest"], e["backend"]))
    for entry in others:
        run_id = entry["run_id"]
        ref_id = reference.get(entry["spec_digest"])
        if run_id not in folders:
            not_compared.append({"run_id": run_id, "reason": "run skipped (backend missing)"})
            continue
        if ref_id is None:
            not_compared.append({"run_id": run_id, "reason": "no NumPy reference run planned"})
            continue
        row = {"run_id": run_id, "reference_run_id": ref_id, "backend": entry["backend"],
               **{k: entry["labels"][k] for k in CASE_LABELS}}
        row.update(compare_folders(folders[run_id], folders[ref_id], cache))
        if ref_id not in noise:
            noise[ref_id] = _reference_noise(folders, reference, ref_id)
        row["rounding_noise_loss"], row["rounding_noise_params"] = noise[ref_id] or (None, None)
        row["verdict"] = verdict(row)
        row["passed"] = row["verdict"] != "disagrees"
        if row["verdict"] == "within rounding noise":
            row["problem"] = ""
        rows.append(row)
    table = pd.DataFrame(rows, columns=[
        "run_id", "reference_run_id", "backend", *CASE_LABELS, "max_rel_loss", "max_abs_loss",
        "max_rel_params", "first_exceed_step", "loss_rtol", "loss_atol", "params_rtol",
        "tolerance", "passed_bound", "divergence_differs", "rounding_noise_loss",
        "rounding_noise_params", "verdict", "passed", "problem"])
    table["first_exceed_step"] = table["first_exceed_step"].astype("Int64")
    summary = {"reference_backend": REFERENCE_BACKEND, "compared": len(rows),
               "passed": int(table["passed"].sum()) if len(table) else 0,
               "failed": int((~table["passed"].astype(bool)).sum()) if len(table) else 0,
               "all_passed": bool(table["passed"].all()) if len(table) else True,
               "not_compared": not_compared,
               "skipped_backends": sorted({s["backend"] for s in skipped}),
               "rule": "train_loss at every logged step within atol + rtol |reference| and each "
                       "final parameter array within rtol normwise (hrta.tolerances.for_run); "
                       "a divergence at another step than the reference's fails; a float32 run "
                       "beyond that bound still agrees if its deviations are within "
                       f"{ROUNDING_NOISE_FACTOR:g}x the float32 reference's own deviation from "
                       "the float64 reference of the same spec (its rounding noise)",
               "within_rounding_noise": int((table["verdict"] == "within rounding noise")
                                            .sum()) if len(table) else 0,
               "by_backend_dtype": _by_backend_dtype(table),
               "runs": table.drop(columns=["problem"]).to_dict("records"),
               "failures": table.loc[~table["passed"].astype(bool),
                                     ["run_id", "problem"]].to_dict("records")
               if len(table) else []}
    return table, summary


def _reference_noise(folders: dict, reference: dict, ref_id: str
                     ) -> tuple[float, float | None] | None:
    """The rounding noise of float32 reference run ``ref_id`` (see :func:`rounding_noise`), or
    None when it is not float32 or no float64 reference of the same spec was run."""
    import dataclasses

    from hrta.run import read_run

    spec = read_run(folders[ref_id]).inputs.spec
    if spec.dtype != "float32":
        return None
    twin = reference.get(dataclasses.replace(spec, dtype="float64").digest())
    if twin is None:
        return None
    return rounding_noise(folders[ref_id], folders[twin])


def _by_backend_dtype(table: pd.DataFrame) -> list[dict]:
    """Per (backend, dtype): runs, passed, the largest deviations and the tolerances' range."""
    if not len(table):
        return []
    out = []
    for (backend, dtype), part in table.groupby(["backend", "dtype"], sort=True):
        out.append({"backend": backend, "dtype": dtype, "runs": len(part),
                    "passed": int(part["passed"].sum()),
                    "within_rounding_noise": int((part["verdict"]
                                                  == "within rounding noise").sum()),
                    "max_rel_loss": float(part["max_rel_loss"].max()),
                    "max_abs_loss": float(part["max_abs_loss"].max()),
                    "max_rel_params": float(part["max_rel_params"].max())
                    if part["max_rel_params"].notna().any() else None,
                    "loss_rtol_min": float(part["loss_rtol"].min()),
                    "loss_rtol_max": float(part["loss_rtol"].max()),
                    "first_exceed_step": (int(part["first_exceed_step"].min())
                                          if part["first_exceed_step"].notna().any() else None)})
    return out
