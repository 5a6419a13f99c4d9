"""The paper's claims (a)-(e), the data each is judged on, and the rules that give its verdict.

Claims (a)-(c) are judged per (backend, dtype) on the evaluation runs at the grid's width, by
paired tests across evaluation seeds (:mod:`hrta.report.stats`):

* the measure of training speed is ``log10`` of the final full-training-set loss after the
  common step budget (every method gets the same number of steps; lower = faster). A diverged
  run scores its *initial* loss (it made no progress). The loss is the training MSE / 2 of the
  network as trained, whatever its final s;
* one test per comparison: the HRTA cell against its comparator cell, paired by seed, at their
  own tuned learning rates; the p-value is the two-sided paired t-test on the log10 losses;
* Holm's correction across tasks: over the tests of one comparison (for claims (a), (b): one
  HRTA method against ReLU with one optimizer and LR schedule; for claim (c): best against
  best) on one (backend, dtype), one test per task;
* each test's outcome and the claim's verdict follow :data:`stats.OUTCOME_RULE` and
  :data:`stats.COMBINE_RULE`.

Claims (d) and (e) take the per-task verdicts of the theory stage (``theory/checks.json``; rules
stated in :func:`hrta.theory.s_squared_check` and :func:`hrta.theory.width_slope`) and combine
them over tasks with the same :func:`stats.combine` rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from hrta.aggregate import threshold_name
from hrta.report import stats
from hrta.report.load import Bundle

CELL = ("task", "method", "optimizer_label", "schedule")
LOSS_FLOOR = 1e-300  # a loss of exactly 0 is scored as this (log10 needs a positive number)
MEASURE = ("log10 of the final full-training-set loss after the common step budget (lower = "
           "faster); a diverged run scores its initial loss")

STATEMENTS = {
    "a": "The homotopy schedule (s rising to 1 from below, e.g. 0.5 -> 1) trains faster than "
         "plain ReLU (s = 1 throughout) under the same optimizer and learning-rate schedule.",
    "b": "Relaxation (a stage with s > 1) speeds up convergence compared with plain ReLU under "
         "the same optimizer and learning-rate schedule.",
    "c": "HRTA beats fairly tuned baselines: the best HRTA configuration trains faster than the "
         "best of ReLU with SGD, Adam and learning-rate schedulers, each tuned with the same "
         "learning-rate budget.",
    "d": "lambda_min of the infinite-width NTK grows like s^2.",
    "e": "Wider networks follow the NTK prediction more closely: the empirical NTK at "
         "initialisation approaches the closed form as the width grows.",
}
TITLES = {"a": "Homotopy beats ReLU", "b": "Relaxation speeds up convergence",
          "c": "HRTA beats tuned baselines", "d": "lambda_min grows like s^2",
          "e": "Wider networks follow the NTK"}


# ---------------------------------------------------------------------------- methods


def _s_values(method: dict) -> list[float]:
    return [v for st in method["stages"] for v in (st["s_from"], st["s_to"])]


def homotopy_methods(grid_doc: dict) -> list[str]:
    """HRTA methods whose s rises to 1 from below and never exceeds 1 (homotopy 0.5 -> 1, the
    linear ramp 0 -> 1, the four stages 0.25 ... 1)."""
    out = []
    for name, m in grid_doc["methods"].items():
        s = _s_values(m)
        if m["family"] == "hrta" and max(s) <= 1 and min(s) < 1 and \
                m["stages"][-1]["s_to"] == 1:
            out.append(name)
    return out


def relaxation_methods(grid_doc: dict) -> list[str]:
    """HRTA methods with a stage at s > 1 (relaxation 1.5 -> 1, relaxation past ReLU 1 -> 1.5)."""
    return [name for name, m in grid_doc["methods"].items()
            if m["family"] == "hrta" and max(_s_values(m)) > 1]


def relu_methods(grid_doc: dict) -> list[str]:
    """Baseline methods at s = 1 throughout (ReLU)."""
    return [name for name, m in grid_doc["methods"].items()
            if m["family"] == "baseline" and all(v == 1 for v in _s_values(m))]


# ---------------------------------------------------------------------------- data


def final_log_loss(frame: pd.DataFrame) -> pd.Series:
    """log10 of each run's final train_loss (float64); diverged or non-finite runs score their
    initial_train_loss."""
    loss = frame["train_loss"].astype("float64")
    bad = frame["diverged"].fillna(False).astype(bool) | ~np.isfinite(loss)
    use = loss.where(~bad, frame["initial_train_loss"].astype("float64"))
    return np.log10(use.clip(lower=LOSS_FLOOR))


@dataclass(frozen=True)
class Group:
    """The evaluation runs of one (backend, dtype) at the grid's width (``frame``, rows of
    results.parquet, with a ``score`` column = :func:`final_log_loss`). ``primary``: the
    grid's declared evaluation backend and dtype, where the statistics have their seeds."""

    backend: str
    dtype: str
    frame: pd.DataFrame
    primary: bool

    @property
    def label(self) -> str:
        return f"{self.backend} {self.dtype}"

    @cached_property
    def cells(self) -> dict[tuple, pd.DataFrame]:
        """{(task, method, optimizer_label, schedule): that cell's runs indexed by seed, with
        the columns score and steps_to_*} (one row per seed)."""
        cols = ["seed", "score", *[c for c in self.frame.columns if c.startswith("steps_to_")]]
        out = {}
        for key, part in self.frame.groupby(list(CELL), sort=False):
            out[key] = part[cols].drop_duplicates("seed").set_index("seed")
        return out

    @property
    def seeds(self) -> int:
        """Largest number of seeds of any one cell."""
        if self.frame.empty:
            return 0
        return int(self.frame.groupby(list(CELL))["seed"].nunique().max())


def eval_groups(bundle: Bundle) -> list[Group]:
    """Every (backend, dtype) with evaluation runs at the grid's width; the primary first."""
    res = bundle.results
    ev = res[(res["phase"] == "eval") & (res["width"] == bundle.width)].copy()
    ev["score"] = final_log_loss(ev)
    groups = []
    for (backend, dtype), part in ev.groupby(["backend", "dtype"], sort=True):
        primary = backend == bundle.eval_backend and dtype == bundle.dtype
        groups.append(Group(str(backend), str(dtype), part.reset_index(drop=True), primary))
    groups.sort(key=lambda g: (not g.primary, g.backend, g.dtype))
    return groups


# ---------------------------------------------------------------------------- tests


@dataclass
class Test:
    """One paired comparison of an HRTA cell with a comparator cell on one (backend, dtype).
    Cells are (method, optimizer_label, schedule) on ``task``; ``seeds`` the paired seeds;
    ``steps``: {threshold name: (median steps HRTA, median steps comparator)} with inf where
    the median run did not reach it."""

    claim: str
    backend: str
    dtype: str
    task: str
    hrta: tuple[str, str, str]
    other: tuple[str, str, str]
    paired: stats.Paired
    seeds: list[int]
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)
    p_holm: float | None = None
    outcome: str = stats.NO_DATA

    @property
    def comparison(self) -> str:
        h, o = self.hrta, self.other
        if h[1:] == o[1:]:
            return f"{h[0]} vs {o[0]} ({h[1]}, {h[2]})"
        return f"{h[0]} ({h[1]}, {h[2]}) vs {o[0]} ({o[1]}, {o[2]})"

    def to_dict(self) -> dict:
        return {"claim": self.claim, "backend": self.backend, "dtype": self.dtype,
                "task": self.task, "comparison": self.comparison,
                "hrta": dict(zip(CELL[1:], self.hrta, strict=True)),
                "comparator": dict(zip(CELL[1:], self.other, strict=True)),
                "seeds": self.seeds, **self.paired.to_dict(), "p_holm": self.p_holm,
                "outcome": self.outcome,
                "steps_to_threshold": {k: list(v) for k, v in self.steps.items()}}


def _median_steps(rows: pd.DataFrame, column: str) -> float:
    """Median steps to a threshold over runs, a run that never reached it counting as inf."""
    if column not in rows or rows.empty:
        return float("nan")
    vals = rows[column].astype("Float64").fillna(np.inf).astype("float64").to_numpy()
    return float(stats.quantiles_inf(vals, [0.5])[0])


def paired_cells(group: Group, task: str, hrta: tuple[str, str, str],
                 other: tuple[str, str, str], claim: str, thresholds: list[float]) -> Test:
    """The test of ``hrta`` against ``other`` on ``task``: scores paired on common seeds."""
    empty = pd.DataFrame({"score": pd.Series(dtype="float64")}, index=pd.Index([], name="seed"))
    x = group.cells.get((task, *hrta), empty)
    y = group.cells.get((task, *other), empty)
    seeds = sorted(set(x.index) & set(y.index))
    paired = stats.paired_test(x.loc[seeds, "score"].to_numpy(), y.loc[seeds, "score"].to_numpy())
    steps = {}
    for thr in thresholds:
        col = f"steps_to_{threshold_name(thr)}"
        steps[threshold_name(thr)] = (_median_steps(x.loc[seeds], col),
                                      _median_steps(y.loc[seeds], col))
    return Test(claim, group.backend, group.dtype, task, hrta, other, paired,
                [int(s) for s in seeds], steps)


def adjust(tests: list[Test], family=lambda test: None) -> None:
    """Holm's correction and each test's outcome, in place. ``family(test)`` names the family
    a test belongs to (default: one family); each family is corrected on its own. The report
    corrects across tasks: a family is one comparison (e.g. homotopy vs ReLU, both with Adam
    and a constant LR) over every task."""
    groups: dict = {}
    for test in tests:
        groups.setdefault(family(test), []).append(test)
    for members in groups.values():
        adjusted = stats.holm([t.paired.p_t for t in members])
        for test, p in zip(members, adjusted, strict=True):
            test.p_holm = p
            test.outcome = stats.outcome(p, test.paired.mean_diff)


def same_optimizer_tests(bundle: Bundle, group: Group, methods: list[str], claim: str,
                         ) -> list[Test]:
    """Each of ``methods`` against ReLU with the same optimizer label and LR schedule, per
    task (schedules run by both families)."""
    grid = bundle.grid
    relu = relu_methods(bundle.grid_doc)
    if not relu:
        return []
    base = relu[0]
    schedules = [s for s in grid["hrta_schedules"] if s in grid["baseline_schedules"]]
    tests = []
    for task in bundle.tasks:
        for method in methods:
            for label in grid["optimizers"]:
                for sched in schedules:
                    tests.append(paired_cells(group, task, (method, label, sched),
                                              (base, label, sched), claim, bundle.thresholds))
    adjust(tests, family=lambda t: (t.hrta, t.other))
    return tests


def tuned_cells(bundle: Bundle) -> pd.DataFrame:
    """The chosen learning rate of every tuned cell with its tuning score (selection.parquet
    rows with chosen true), sorted by (task, score, method, optimizer_label, schedule)."""
    sel = bundle.selection[bundle.selection["chosen"].astype(bool)].copy()
    sel["score"] = sel["score"].astype("float64").fillna(np.inf)
    return sel.sort_values(["task", "score", "method", "optimizer_label", "schedule"],
                           kind="stable").reset_index(drop=True)


def best_cell(cells: pd.DataFrame, task: str, family: str,
              method: str | None = None) -> tuple[str, str, str] | None:
    """The cell of ``task`` (and ``family``, optionally ``method``) with the lowest tuning
    score (ties: method, optimizer label, schedule in alphabetical order)."""
    part = cells[(cells["task"] == task) & (cells["family"] == family)]
    if method is not None:
        part = part[part["method"] == method]
    if part.empty:
        return None
    row = part.iloc[0]
    return (str(row["method"]), str(row["optimizer_label"]), str(row["schedule"]))


def best_vs_best_tests(bundle: Bundle, group: Group, claim: str = "c") -> list[Test]:
    """Claim (c): per task, the HRTA cell with the best tuning score against the baseline cell
    with the best tuning score (both picked on the tuning seeds, tested on the evaluation
    seeds)."""
    cells = tuned_cells(bundle)
    tests = []
    for task in bundle.tasks:
        h, b = best_cell(cells, task, "hrta"), best_cell(cells, task, "baseline")
        if h is not None and b is not None:
            tests.append(paired_cells(group, task, h, b, claim, bundle.thresholds))
    adjust(tests)
    return tests


def variant_tests(bundle: Bundle, group: Group) -> list[Test]:
    """Every HRTA variant (its best-tuned cell) against the best tuned baseline, per task; one
    Holm family per variant (across tasks). Evidence for the per-task results, not part of a
    verdict."""
    cells = tuned_cells(bundle)
    tests = []
    for task in bundle.tasks:
        b = best_cell(cells, task, "baseline")
        if b is None:
            continue
        for method, m in bundle.grid_doc["methods"].items():
            if m["family"] != "hrta":
                continue
            h = best_cell(cells, task, "hrta", method)
            if h is not None:
                tests.append(paired_cells(group, task, h, b, "variants", bundle.thresholds))
    adjust(tests, family=lambda t: t.hrta[0])
    return tests


# ---------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    """A claim's verdict on one (backend, dtype), or on the closed form for claim (d)."""

    claim: str
    backend: str
    dtype: str
    verdict: str
    counts: dict
    note: str = ""

    def to_dict(self) -> dict:
        return {"claim": self.claim, "backend": self.backend, "dtype": self.dtype,
                "verdict": self.verdict, **self.counts, "note": self.note}


@dataclass
class ClaimResult:
    """A claim: its statement, measure and rule, a verdict per backend, and its evidence
    (``tests`` for (a)-(c); ``details`` rows for (d), (e))."""

    key: str
    statement: str
    measure: str
    rule: str
    verdicts: list[Verdict]
    tests: list[Test] = field(default_factory=list)
    details: list[dict] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.key]

    def to_dict(self) -> dict:
        return {"claim": self.key, "title": self.title, "statement": self.statement,
                "measure": self.measure, "rule": self.rule,
                "verdicts": [v.to_dict() for v in self.verdicts],
                "tests": [t.to_dict() for t in self.tests], "details": self.details}


def count_outcomes(outcomes: list[str]) -> dict:
    return {"tests": len(outcomes), "for": outcomes.count(stats.FOR),
            "against": outcomes.count(stats.AGAINST),
            "neither": outcomes.count(stats.NEITHER), "no_data": outcomes.count(stats.NO_DATA)}


def verdict_from_tests(claim: str, group: Group, tests: list[Test]) -> Verdict:
    outcomes = [t.outcome for t in tests]
    counts = count_outcomes(outcomes)
    counts["seeds"] = group.seeds
    note = ""
    if not tests:
        note = "no comparison possible (a side of every comparison is missing)"
    elif counts["no_data"] == len(tests):
        note = (f"{group.seeds} seed(s) per cell: a paired test needs at least 2; see the "
                f"agreement certificate for how this backend matches the reference")
    return Verdict(claim, group.backend, group.dtype, stats.combine(outcomes), counts, note)


PAIRED_RULE = (f"Paired two-sided t-test across evaluation seeds on the {MEASURE}; Holm's "
               f"correction across tasks (over the tasks' tests of one comparison on one "
               f"backend and dtype); "
               f"{stats.OUTCOME_RULE}. Verdict: {stats.COMBINE_RULE}.")


def claim_ab(bundle: Bundle, groups: list[Group], key: str) -> ClaimResult:
    methods = (homotopy_methods if key == "a" else relaxation_methods)(bundle.grid_doc)
    tests, verdicts = [], []
    for group in groups:
        found = same_optimizer_tests(bundle, group, methods, key)
        tests += found
        verdicts.append(verdict_from_tests(key, group, found))
    rule = (f"Methods tested: {', '.join(methods) or 'none in this grid'}; each against ReLU "
            f"with the same optimizer and LR schedule, per task. {PAIRED_RULE}")
    return ClaimResult(key, STATEMENTS[key], MEASURE, rule, verdicts, tests)


def claim_c(bundle: Bundle, groups: list[Group]) -> ClaimResult:
    tests, verdicts = [], []
    for group in groups:
        found = best_vs_best_tests(bundle, group)
        tests += found
        verdicts.append(verdict_from_tests("c", group, found))
    rule = ("Per task, the HRTA cell (variant x optimizer x LR schedule) and the baseline cell "
            "(ReLU x optimizer x LR schedule) with the best tuning score (the grid's tuning "
            "rule, on the tuning seeds, each at its own tuned learning rate) are compared on "
            f"the evaluation seeds. {PAIRED_RULE}")
    return ClaimResult("c", STATEMENTS["c"], MEASURE, rule, verdicts, tests)


def claim_d(bundle: Bundle) -> ClaimResult:
    checks = (bundle.theory_checks or {}).get("s_squared") or {}
    details, outcomes = [], []
    for task in bundle.tasks:
        c = checks.get(task)
        if c is None:
            continue
        outcomes.append(c["verdict"])
        details.append({"task": task, "slope": c.get("slope"),
                        "secant_slope": c.get("secant_slope"),
                        "slope_bounds": c.get("slope_bounds"), "increasing": c.get("increasing"),
                        "null_dim": c.get("null_dim"), "verdict": c["verdict"]})
    rule_task = next((c["rule"] for c in checks.values() if "rule" in c), "not run")
    counts = {"tests": len(outcomes), "for": outcomes.count(stats.REPRODUCED),
              "against": outcomes.count(stats.NOT_REPRODUCED),
              "neither": outcomes.count(stats.INCONCLUSIVE), "no_data": 0}
    note = "" if outcomes else "the theory stage did not run (no theory/checks.json)"
    verdict = Verdict("d", "closed form", "float64", stats.combine(outcomes), counts, note)
    rule = (f"Per task (closed-form NTK on the task's training inputs, float64 NumPy): "
            f"{rule_task}. Over tasks: {stats.COMBINE_RULE} (a task reproduced counts for, "
            f"not reproduced against).")
    measure = ("least-squares slope of ln lambda_min against ln s (2 for s^2 growth)")
    return ClaimResult("d", STATEMENTS["d"], measure, rule, [verdict], details=details)


def claim_e(bundle: Bundle) -> ClaimResult:
    width = (bundle.theory_checks or {}).get("width") or {}
    details, verdicts, rule_task = [], [], "not run"
    dtype = "float64"
    if bundle.ntk_width is not None and not bundle.ntk_width.empty:
        dtype = str(bundle.ntk_width["dtype"].iloc[0])
    for backend in sorted(width):
        entry = width[backend] or {}
        outcomes = []
        for task in bundle.tasks:
            c = (entry.get("checks") or {}).get(task)
            if c is None:
                continue
            rule_task = c.get("rule", rule_task)
            outcomes.append(c["verdict"])
            details.append({"backend": backend, "task": task, "widths": c.get("widths"),
                            "slope": c.get("slope"), "ci": c.get("ci"),
                            "consistent_with_inverse_sqrt": c.get("consistent_with_inverse_sqrt"),
                            "verdict": c["verdict"]})
        counts = {"tests": len(outcomes), "for": outcomes.count(stats.REPRODUCED),
                  "against": outcomes.count(stats.NOT_REPRODUCED),
                  "neither": outcomes.count(stats.INCONCLUSIVE), "no_data": 0}
        note = f"skipped: {entry['skipped']}" if entry.get("skipped") else ""
        verdicts.append(Verdict("e", backend, dtype, stats.combine(outcomes), counts, note))
    rule = (f"Per backend and task (empirical NTK at initialisation from the backend's own "
            f"autodiff against the closed form, over the grid's widths and seeds): {rule_task}. "
            f"Over tasks: {stats.COMBINE_RULE}. The measured-vs-predicted GD rates are shown "
            f"as evidence only (see Theory).")
    measure = "log-log slope of the relative Frobenius error of the NTK against the width"
    return ClaimResult("e", STATEMENTS["e"], measure, rule, verdicts, details=details)


def evaluate_claims(bundle: Bundle) -> list[ClaimResult]:
    """Claims (a)-(e) with verdicts and evidence."""
    groups = eval_groups(bundle)
    return [claim_ab(bundle, groups, "a"), claim_ab(bundle, groups, "b"),
            claim_c(bundle, groups), claim_d(bundle), claim_e(bundle)]
