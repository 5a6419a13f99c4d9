"""The report's statistics: paired tests across seeds, bootstrap intervals, Holm's correction,
and the rule that turns adjusted p-values and effect directions into verdicts.

Conventions. A paired comparison takes two float64 arrays of equal length n, ``x`` (the HRTA
side) and ``y`` (the comparator), one value per evaluation seed, on a scale where *lower is
better* (the report uses log10 of a loss). Its effect is d = x - y per seed:

* ``mean_diff`` (the effect size on the data's own scale: for log10 losses, 10 ** mean_diff is
  the geometric-mean ratio of the losses, < 1 when x is lower), ``median_diff``;
* ``d_z`` = mean(d) / sd(d) (Cohen's d for paired data; None when sd = 0 or n < 2);
* ``ci``: a percentile bootstrap interval of mean(d) (``BOOTSTRAP`` resamples of the n seeds,
  fixed generator seed, so the report is reproducible);
* ``p_t``: two-sided paired t-test of mean(d) = 0 (the p-value the verdicts use: with 5 seeds
  Wilcoxon's exact two-sided p-value cannot go below 2 / 2^5 = 0.0625, so it could never
  reach ALPHA); ``p_wilcoxon``: two-sided exact Wilcoxon signed-rank test, reported as a
  check that needs no normality.

With zero spread (every d equal) the t statistic is undefined; ``p_t`` is then 1 when d = 0 and
0 otherwise (a difference that every seed reproduces exactly).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05
CI_LEVEL = 0.95
BOOTSTRAP = 10_000
BOOTSTRAP_SEED = 20230927  # the arXiv date of the HRTA paper: any fixed value will do

FOR, AGAINST, NEITHER, NO_DATA = "for", "against", "neither", "no data"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

OUTCOME_RULE = (f"a test counts 'for' the claim when its Holm-adjusted p-value is below "
                f"{ALPHA} and the mean paired difference favours HRTA (lower), 'against' when "
                f"the adjusted p-value is below {ALPHA} and the difference favours the "
                f"comparator, and 'neither' otherwise")
COMBINE_RULE = ("reproduced when no test is against and more than half of the tests are for; "
                "not reproduced when at least one test is against and the tests against are at "
                "least as many as those for; inconclusive otherwise (including when no test "
                "has data)")


@dataclass(frozen=True)
class Paired:
    """A paired comparison of x (HRTA side) with y (comparator) over n seeds; see module
    docstring. Floats are plain Python floats; None where undefined."""

    n: int
    mean_diff: float | None
    median_diff: float | None
    sd_diff: float | None
    d_z: float | None
    ci_low: float | None
    ci_high: float | None
    p_t: float | None
    p_wilcoxon: float | None
    wins: int            # seeds with d < 0 (x better)
    losses: int          # seeds with d > 0 (y better)

    def to_dict(self) -> dict:
        return asdict(self)


def _vector(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values, got {arr.tolist()}")
    return arr


def bootstrap_mean_ci(d: Sequence[float], level: float = CI_LEVEL, resamples: int = BOOTSTRAP,
                      seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``d`` (float64, length n): the
    ((1 - level) / 2, (1 + level) / 2) quantiles of the means of ``resamples`` samples of n
    values drawn with replacement. None when n < 2."""
    d = _vector(d, "d")
    if d.size < 2:
        return None
    if not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_test(x: Sequence[float], y: Sequence[float]) -> Paired:
    """Compare x with y seed by seed (same order, same length, finite values)."""
    from scipy import stats

    x, y = _vector(x, "x"), _vector(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x, y: expected paired arrays of one length, got {x.size} and {y.size}")
    d = x - y
    n = int(d.size)
    if n == 0:
        return Paired(0, None, None, None, None, None, None, None, None, 0, 0)
    mean, median = float(d.mean()), float(np.median(d))
    wins, losses = int((d < 0).sum()), int((d > 0).sum())
    if n < 2:
        return Paired(n, mean, median, None, None, None, None, None, None, wins, losses)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        p_t = 1.0 if mean == 0.0 else 0.0
        d_z = None
    else:
        p_t = float(stats.ttest_rel(x, y).pvalue)
        d_z = mean / sd
    if np.all(d == 0):
        p_w = 1.0
    else:
        p_w = float(stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)
    ci = bootstrap_mean_ci(d)
    return Paired(n, mean, median, sd, d_z, ci[0], ci[1], p_t, p_w, wins, losses)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order; None entries (tests without data)
    stay None and do not count towards the family size m. Adjusted p_(i) (i-th smallest, i from
    1) = max over j <= i of min(1, (m - j + 1) p_(j))."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    for p, i in present:
        if not (0.0 <= p <= 1.0) or math.isnan(p):
            raise ValueError(f"pvalues[{i}]: expected a number in [0, 1], got {p}")
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def outcome(p_adjusted: float | None, mean_diff: float | None, alpha: float = ALPHA) -> str:
    """One test's outcome (:data:`OUTCOME_RULE`): FOR, AGAINST, NEITHER, or NO_DATA when the
    test has no p-value."""
    if p_adjusted is None or mean_diff is None:
        return NO_DATA
    if p_adjusted < alpha and mean_diff < 0:
        return FOR
    if p_adjusted < alpha and mean_diff > 0:
        return AGAINST
    return NEITHER


def combine(outcomes: Iterable[str]) -> str:
    """A claim's verdict from its tests' outcomes (:data:`COMBINE_RULE`). Outcomes of tests
    without data are ignored; FOR / AGAINST may also be the per-unit verdicts REPRODUCED /
    NOT_REPRODUCED (used for claims (d) and (e), whose units are tasks)."""
    mapping = {FOR: FOR, REPRODUCED: FOR, AGAINST: AGAINST, NOT_REPRODUCED: AGAINST,
               NEITHER: NEITHER, INCONCLUSIVE: NEITHER}
    counted = []
    for item in outcomes:
        if item == NO_DATA:
            continue
        if item not in mapping:
            raise ValueError(f"outcome: expected one of {sorted(mapping)} or {NO_DATA!r}, "
                             f"got {item!r}")
        counted.append(mapping[item])
    n_for, n_against = counted.count(FOR), counted.count(AGAINST)
    if not counted:
        return INCONCLUSIVE
    if n_against == 0 and n_for > len(counted) / 2:
        return REPRODUCED
    if n_against > 0 and n_against >= n_for:
        return NOT_REPRODUCED
    return INCONCLUSIVE


# ---------------------------------------------------------------------------- summaries


def median_iqr(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(25th percentile, median, 75th percentile) of the finite values; None if there are
    none."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None
    q1, med, q3 = np.quantile(arr, [0.25, 0.5, 0.75])
    return float(q1), float(med), float(q3)


def quantiles_inf(values: Sequence[float], qs: Sequence[float]) -> np.ndarray:
    """Linear-interpolation quantiles (float64, one per q) of values that may hold +inf (a
    threshold never reached): a quantile that puts any weight on an inf is inf."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or np.isnan(arr).any():
        raise ValueError(f"values: expected a non-empty sequence without NaN, got {arr.tolist()}")
    big = np.where(np.isposinf(arr), 1e300, arr)
    out = np.quantile(big, np.asarray(qs, dtype=np.float64))
    return np.where(out >= 1e280, np.inf, out)


def geometric_mean_ci(values: Sequence[float], level: float = CI_LEVEL,
                      ) -> tuple[float, float | None, float | None] | None:
    """(geometric mean, low, high) of positive values: the Student-t interval of the mean of
    log10(values), mapped back with 10 ** (interval bounds None for fewer than 2 values).
    Non-finite or non-positive values are dropped; None if none remain."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr) & (arr > 0)]
    if arr.size == 0:
        return None
    logs = np.log10(arr)
    mean = float(logs.mean())
    if arr.size < 2:
        return 10 ** mean, None, None
    half = float(stats.t.ppf((1 + level) / 2, arr.size - 1) * stats.sem(logs))
    return 10 ** mean, 10 ** (mean - half), 10 ** (mean + half)


__all__ = ["AGAINST", "ALPHA", "BOOTSTRAP", "CI_LEVEL", "COMBINE_RULE", "FOR", "INCONCLUSIVE",
           "NEITHER", "NOT_REPRODUCED", "NO_DATA", "OUTCOME_RULE", "Paired", "REPRODUCED",
           "VERDICTS", "bootstrap_mean_ci", "combine", "geometric_mean_ci", "holm",
           "median_iqr", "outcome", "paired_test", "quantiles_inf"]
