"""The agreement certificate: for every backend and dtype, how far its evaluation runs strayed
from the NumPy reference run of the identical spec, and the tolerances they were held to.

Built only from ``agreement.parquet`` / ``agreement.json`` (the pipeline's agreement stage,
:mod:`hrta.agreement`) and ``skipped.json``. The same content is written as
``certificate.json`` beside the report.
"""

from __future__ import annotations

import math

import pandas as pd

from hrta.report.load import Bundle

COLUMNS = ("backend", "dtype", "runs", "passed", "within_rounding_noise", "failed",
           "max_rel_loss", "max_abs_loss", "max_rel_params", "first_exceed_step",
           "first_exceed_run", "loss_rtol_min",
           "loss_rtol_max", "loss_atol_max", "params_rtol_min", "params_rtol_max", "tolerance")


def _num(value) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or pd.isna(value):
        return None
    return float(value)


def certificate_rows(table: pd.DataFrame) -> list[dict]:
    """One row per (backend, dtype) with the columns of :data:`COLUMNS`: largest deviations
    over the runs (relative and absolute training loss over every logged step, relative final
    parameters normwise), the earliest step any run exceeded its tolerance (and that run), and
    the range of tolerances used (they depend on the run's size, hrta.tolerances)."""
    rows = []
    for (backend, dtype), part in table.groupby(["backend", "dtype"], sort=True):
        passed = part["passed"].astype(bool)
        exceeded = part[part["first_exceed_step"].notna()]
        first = None
        if len(exceeded):
            first = exceeded.sort_values("first_exceed_step", kind="stable").iloc[0]
        rows.append({
            "backend": str(backend), "dtype": str(dtype), "runs": int(len(part)),
            "passed": int(passed.sum()),
            "within_rounding_noise": int((part["verdict"] == "within rounding noise").sum())
            if "verdict" in part else 0,
            "failed": int((~passed).sum()),
            "max_rel_loss": _num(part["max_rel_loss"].max()),
            "max_abs_loss": _num(part["max_abs_loss"].max()),
            "max_rel_params": _num(part["max_rel_params"].max()),
            "first_exceed_step": None if first is None else int(first["first_exceed_step"]),
            "first_exceed_run": None if first is None else str(first["run_id"]),
            "loss_rtol_min": _num(part["loss_rtol"].min()),
            "loss_rtol_max": _num(part["loss_rtol"].max()),
            "loss_atol_max": _num(part["loss_atol"].max()),
            "params_rtol_min": _num(part["params_rtol"].min()),
            "params_rtol_max": _num(part["params_rtol"].max()),
            "tolerance": "; ".join(sorted(set(part["tolerance"].astype(str)))),
        })
    return rows


def certificate(bundle: Bundle, report_id: str) -> dict:
    """The machine-readable certificate (JSON-able): per (backend, dtype) rows, the failing
    runs with the reason, runs not compared, backends that could not run, and the rule."""
    summary = bundle.agreement_summary or {}
    table = bundle.agreement
    missing = (bundle.skipped or {}).get("missing_backends") or {}
    out = {
        "report_id": report_id,
        "grid": bundle.name,
        "reference_backend": summary.get("reference_backend", "numpy"),
        "rule": summary.get("rule", ""),
        "compared": 0, "passed": 0, "failed": 0, "all_passed": None,
        "by_backend_dtype": [], "failures": [],
        "not_compared": summary.get("not_compared", []),
        "backends_not_run": [{"backend": k, "reason": v} for k, v in sorted(missing.items())],
    }
    if table is None or table.empty:
        return out
    rows = certificate_rows(table)
    failed = table[~table["passed"].astype(bool)]
    problem = failed["problem"] if "problem" in failed else pd.Series([""] * len(failed))
    out.update({
        "compared": int(len(table)), "passed": int(table["passed"].astype(bool).sum()),
        "failed": int(len(failed)), "all_passed": bool(table["passed"].astype(bool).all()),
        "within_rounding_noise": sum(r["within_rounding_noise"] for r in rows),
        "by_backend_dtype": rows,
        "failures": [{"run_id": str(r), "backend": str(b), "dtype": str(d),
                      "first_exceed_step": None if pd.isna(s) else int(s), "problem": str(p)}
                     for r, b, d, s, p in zip(failed["run_id"], failed["backend"],
                                              failed["dtype"], failed["first_exceed_step"],
                                              problem, strict=True)],
    })
    return out
