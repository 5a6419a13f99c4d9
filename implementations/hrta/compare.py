"""Agreement of runs of one spec: train_loss at every logged step and the final parameters,
each run held against a baseline (normally the NumPy reference).

``compare_runs(baseline, others)`` works on :class:`RunView` objects, made from run folders
(``RunView.from_folder``) or from in-memory results (``RunView.from_outcome``, used by the
conformance suite), so that ``hrta compare`` and the suite share one definition of agreement.

Per logged step k: abs_diff = |L_k - L_k^base|, rel_diff = abs_diff / |L_k^base|, and the step
passes when abs_diff <= atol + rtol |L_k^base|. Parameters are compared per array, normwise:
rel = ||theta - theta^base||_2 / ||theta^base||_2. Tolerances default to those of
:mod:`hrta.tolerances` for the spec's dtype and sizes.

Divergence: losses are compared at the logged steps before the earlier divergence step; a run
that diverges where the baseline does not (or the reverse, or at another step) fails at the
earlier of the two steps. Parameters of a diverged run are not compared (they are not finite).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrta import tolerances
from hrta.spec import RunSpec
from hrta.tolerances import Tolerance

PARAM_NAMES = ("W", "b", "a")


class SpecMismatch(ValueError):
    """Runs of different specs cannot be compared."""


@dataclass(frozen=True)
class RunView:
    """What a comparison needs from a run. steps int64 (rows,), train_loss float64 (rows,),
    params W (m, d), b (m,), a (m,)."""

    label: str
    backend: str
    spec: RunSpec
    steps: np.ndarray
    train_loss: np.ndarray
    params: dict[str, np.ndarray]
    diverged_step: int | None

    @classmethod
    def from_folder(cls, folder) -> RunView:
        """From a :class:`hrta.run.RunFolder` (``hrta.run.read_run``)."""
        metrics = folder.metrics
        return cls(label=str(folder.path), backend=str(metrics.get("backend", "?")),
                   spec=folder.inputs.spec, steps=np.asarray(folder.history["step"]),
                   train_loss=np.asarray(folder.history["train_loss"], dtype=np.float64),
                   params=folder.params, diverged_step=metrics.get("diverged_step"))

    @classmethod
    def from_outcome(cls, outcome, label: str | None = None) -> RunView:
        """From a :class:`hrta.run.RunOutcome` (``hrta.run.execute``), nothing written."""
        rows = outcome.history
        backend = outcome.metrics["backend"]
        return cls(label=label or backend, backend=backend, spec=outcome.inputs.spec,
                   steps=np.array([r[0] for r in rows], dtype=np.int64),
                   train_loss=np.array([r[3] for r in rows], dtype=np.float64),
                   params=outcome.result.params, diverged_step=outcome.result.diverged_step)


@dataclass
class ParamDiff:
    max_abs: float
    rel: float  # normwise
    ok: bool


@dataclass
class RunComparison:
    """One run against the baseline. Arrays cover the compared steps (before divergence)."""

    label: str
    backend: str
    steps: np.ndarray
    baseline_loss: np.ndarray
    loss: np.ndarray
    abs_diff: np.ndarray
    rel_diff: np.ndarray
    within: np.ndarray  # bool per compared step
    loss_tolerance: Tolerance
    params_tolerance: Tolerance
    params: dict[str, ParamDiff] | None  # None when either run diverged
    baseline_diverged: int | None
    diverged: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def first_bad_step(self) -> int | None:
        """The first step where the run stops agreeing (loss or divergence), or None."""
        candidates = [int(self.steps[i]) for i in np.flatnonzero(~self.within)[:1]]
        if self.diverged != self.baseline_diverged:
            candidates.append(min(k for k in (self.diverged, self.baseline_diverged)
                                  if k is not None))
        return min(candidates) if candidates else None

    @property
    def params_ok(self) -> bool:
        return self.params is None or all(p.ok for p in self.params.values())

    @property
    def ok(self) -> bool:
        return self.first_bad_step is None and self.params_ok

    @property
    def worst(self) -> tuple[float, float, int | None]:
        """(max abs diff, max rel diff, step of the max rel diff) over the compared steps."""
        if not len(self.steps):
            return 0.0, 0.0, None
        i = int(np.argmax(self.rel_diff))
        return float(np.max(self.abs_diff)), float(self.rel_diff[i]), int(self.steps[i])

    def failure_message(self) -> str:
        """One line per problem: the step, the values and the tolerance."""
        lines = []
        step = self.first_bad_step
        bad = np.flatnonzero(~self.within)
        if len(bad):
            i = int(bad[0])
            tol = self.loss_tolerance
            got, want = float(self.loss[i]), float(self.baseline_loss[i])
            lines.append(f"train_loss at step {int(self.steps[i])}: {got!r} vs baseline "
                         f"{want!r} (abs diff {self.abs_diff[i]:.3g}, rel diff "
                         f"{self.rel_diff[i]:.3g} > rtol {tol.rtol:.3g}, atol {tol.atol:.3g})")
        if self.diverged != self.baseline_diverged:
            lines.append(f"divergence at step {step}: {_div(self.diverged)}, baseline "
                         f"{_div(self.baseline_diverged)}")
        for name, diff in (self.params or {}).items():
            if not diff.ok:
                lines.append(f"final parameter {name}: normwise rel diff {diff.rel:.3g} > rtol "
                             f"{self.params_tolerance.rtol:.3g} (max abs diff {diff.max_abs:.3g})")
        return "; ".join(lines)

    def to_dict(self) -> dict:
        max_abs, max_rel, at = self.worst
        return {
            "label": self.label, "backend": self.backend, "ok": self.ok,
            "first_exceeding_step": self.first_bad_step,
            "problems": [self.failure_message()] if not self.ok else [],
            "max_abs_diff": _json_float(max_abs), "max_rel_diff": _json_float(max_rel),
            "max_rel_diff_step": at,
            "diverged_step": self.diverged, "baseline_diverged_step": self.baseline_diverged,
            "train_loss_tolerance": self.loss_tolerance.to_dict(),
            "params_tolerance": self.params_tolerance.to_dict(),
            "params": None if self.params is None else {
                k: {"max_abs_diff": _json_float(p.max_abs), "rel_diff": _json_float(p.rel),
                    "ok": p.ok} for k, p in self.params.items()},
            "steps": [int(k) for k in self.steps],
            "train_loss": [_json_float(v) for v in self.loss],
            "baseline_train_loss": [_json_float(v) for v in self.baseline_loss],
            "abs_diff": [_json_float(v) for v in self.abs_diff],
            "rel_diff": [_json_float(v) for v in self.rel_diff],
        }


def _div(step: int | None) -> str:
    return "did not diverge" if step is None else f"diverged at step {step}"


def _json_float(value: float) -> float | None:
    """JSON has no inf or NaN: they become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def relative(diff: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|diff| / |ref| elementwise; 0 where both are 0, inf where only ref is 0."""
    diff, ref = np.abs(diff), np.abs(ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = diff / ref
    out[(ref == 0) & (diff == 0)] = 0.0
    out[(ref == 0) & (diff != 0)] = np.inf
    return out


def check_same_spec(baseline: RunView, run: RunView) -> None:
    """Raise SpecMismatch naming the fields in which two runs' specs differ."""
    if baseline.spec.digest() == run.spec.digest():
        return
    a, b = baseline.spec.to_dict(), run.spec.to_dict()
    fields = [key for key in a if a[key] != b.get(key)]
    raise SpecMismatch(f"{run.label}: made from another spec than the baseline {baseline.label} "
                       f"(spec digest {run.spec.digest()[:12]} vs {baseline.spec.digest()[:12]}; "
                       f"differs in {', '.join(fields)})")


def compare_pair(baseline: RunView, run: RunView, loss_tol: Tolerance | None = None,
                 params_tol: Tolerance | None = None) -> RunComparison:
    """Hold ``run`` against ``baseline`` (same spec required) with the given or default
    tolerances."""
    check_same_spec(baseline, run)
    default_loss, default_params = tolerances.for_run(baseline.spec)
    loss_tol = loss_tol or default_loss
    params_tol = params_tol or default_params
    limit = min((k for k in (baseline.diverged_step, run.diverged_step) if k is not None),
                default=math.inf)
    common = np.intersect1d(baseline.steps, run.steps)
    common = common[common < limit]
    ref = baseline.train_loss[np.searchsorted(baseline.steps, common)]
    got = run.train_loss[np.searchsorted(run.steps, common)]
    with np.errstate(invalid="ignore", over="ignore"):
        abs_diff = np.abs(got - ref)
        within = abs_diff <= loss_tol.allowed(ref)  # NaN compares False: a failure
    rel_diff = relative(abs_diff, ref)
    params = None
    if baseline.diverged_step is None and run.diverged_step is None:
        params = {}
        for name in PARAM_NAMES:
            want = np.asarray(baseline.params[name], dtype=np.float64)
            have = np.asarray(run.params[name], dtype=np.float64)
            if want.shape != have.shape:
                raise SpecMismatch(f"{run.label}: parameter {name} has shape {have.shape}, "
                                   f"baseline {want.shape}")
            delta = have - want
            norm = float(np.linalg.norm(want))
            err = float(np.linalg.norm(delta))
            rel = float(relative(np.array([err]), np.array([norm]))[0])
            max_abs = float(np.max(np.abs(delta))) if delta.size else 0.0
            params[name] = ParamDiff(max_abs, rel, bool(err <= params_tol.allowed(norm)))
    return RunComparison(label=run.label, backend=run.backend, steps=common,
                         baseline_loss=ref, loss=got, abs_diff=abs_diff, rel_diff=rel_diff,
                         within=within, loss_tolerance=loss_tol, params_tolerance=params_tol,
                         params=params, baseline_diverged=baseline.diverged_step,
                         diverged=run.diverged_step)


def compare_runs(baseline: RunView, runs: list[RunView], loss_tol: Tolerance | None = None,
                 params_tol: Tolerance | None = None) -> list[RunComparison]:
    """Every run against the baseline; all specs are checked before anything is compared."""
    for run in runs:
        check_same_spec(baseline, run)
    return [compare_pair(baseline, run, loss_tol, params_tol) for run in runs]


# ---------------------------------------------------------------------------- reporting


def report_dict(baseline: RunView, comparisons: list[RunComparison]) -> dict:
    """The JSON report: baseline, tolerances and, per run, every compared step."""
    return {
        "baseline": {"label": baseline.label, "backend": baseline.backend,
                     "diverged_step": baseline.diverged_step},
        "spec_digest": baseline.spec.digest(),
        "dtype": baseline.spec.dtype,
        "steps": baseline.spec.total_steps,
        "ok": all(c.ok for c in comparisons),
        "runs": [c.to_dict() for c in comparisons],
    }


def write_json(path: Path | str, report: dict) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def _pick_rows(comparisons: list[RunComparison], steps: np.ndarray, max_rows: int | None
               ) -> list[int]:
    """Row indices to print: all, or about ``max_rows`` evenly spaced plus the first and last
    steps, each run's first failing step and its largest relative difference."""
    count = len(steps)
    if max_rows is None or count <= max_rows:
        return list(range(count))
    keep = set(np.linspace(0, count - 1, max_rows).round().astype(int).tolist())
    for c in comparisons:
        bad = np.flatnonzero(~c.within)
        if len(bad):
            keep.add(int(np.searchsorted(steps, c.steps[bad[0]])))
        if len(c.steps):
            keep.add(int(np.searchsorted(steps, c.steps[int(np.argmax(c.rel_diff))])))
    return sorted(k for k in keep if k < count)


def format_report(baseline: RunView, comparisons: list[RunComparison],
                  max_rows: int | None = 20) -> str:
    """A table of rel diffs per logged step (one column per run) and a summary per run."""
    spec = baseline.spec
    diverged = "" if baseline.diverged_step is None else f", {_div(baseline.diverged_step)}"
    lines = [f"baseline: {baseline.label} ({baseline.backend}, {spec.dtype}, "
             f"{spec.total_steps} steps, spec {spec.digest()[:12]}{diverged})"]
    if comparisons:
        c0 = comparisons[0]
        lines.append(f"tolerance: train_loss |diff| <= {c0.loss_tolerance.atol:g} + "
                     f"{c0.loss_tolerance.rtol:.3g} |baseline|  [{c0.loss_tolerance.basis}]")
        lines.append(f"           params ||diff|| <= {c0.params_tolerance.rtol:.3g} ||baseline|| "
                     f"[{c0.params_tolerance.basis}]")
    lines.append("")
    steps = np.array(sorted(set().union(*(c.steps.tolist() for c in comparisons)))
                     if comparisons else [], dtype=np.int64)
    names = [f"run{i + 1} rel" for i in range(len(comparisons))]
    header = f"{'step':>8}  {'baseline loss':>22}  " + "  ".join(f"{n:>10}" for n in names)
    lines.append(header)
    base_loss = dict(zip(baseline.steps.tolist(), baseline.train_loss.tolist(), strict=True))
    rows = _pick_rows(comparisons, steps, max_rows)
    previous = -1
    for r in rows:
        if r != previous + 1:
            lines.append(f"{'...':>8}")
        step = int(steps[r])
        cells = []
        for c in comparisons:
            j = np.searchsorted(c.steps, step)
            if j < len(c.steps) and c.steps[j] == step:
                mark = " " if c.within[j] else "!"
                cells.append(f"{c.rel_diff[j]:>9.2e}{mark}")
            else:
                cells.append(f"{'-':>10}")
        lines.append(f"{step:>8}  {base_loss[step]:>22.15e}  " + "  ".join(cells))
        previous = r
    if rows and rows[-1] != len(steps) - 1:
        lines.append(f"{'...':>8}")
    lines.append("  ('!' marks a step beyond the tolerance)")
    lines.append("")
    lines.append(f"{'run':<6} {'backend':<14} {'max abs':>9} {'max rel':>9} {'at step':>8} "
                 f"{'first bad':>9} {'params rel':>10}  verdict   folder")
    for name, c in zip(names, comparisons, strict=True):
        max_abs, max_rel, at = c.worst
        prel = ("n/a" if c.params is None
                else f"{max(p.rel for p in c.params.values()):.2e}")
        first = "-" if c.first_bad_step is None else str(c.first_bad_step)
        verdict = "ok" if c.ok else "EXCEEDED"
        lines.append(f"{name.split()[0]:<6} {c.backend:<14} {max_abs:>9.2e} {max_rel:>9.2e} "
                     f"{'-' if at is None else at:>8} {first:>9} {prel:>10}  {verdict:<9} "
                     f"{c.label}")
    for name, c in zip(names, comparisons, strict=True):
        if not c.ok:
            lines.append(f"{name.split()[0]}: {c.failure_message()}")
    return "\n".join(lines) + "\n"
