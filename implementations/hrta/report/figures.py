"""The report's figures (matplotlib, Agg, no pyplot state): each function returns a
:class:`matplotlib.figure.Figure` drawn only from the results tables; :func:`to_png` renders it.

Design: colour-blind-safe colours (Okabe-Ito) that are also told apart by line style or marker
shape in grey-scale print; labelled axes with units; log scales where values span decades.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from hrta.aggregate import threshold_name  # noqa: E402
from hrta.report import stats  # noqa: E402
from hrta.report.claims import CELL, Group, Test  # noqa: E402
from hrta.report.load import Bundle  # noqa: E402

DPI = 130
STYLE = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 8.5,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": DPI}
METHOD_STYLE = {
    "relu": ("#000000", "-"),
    "homotopy": ("#0072B2", (0, (5, 2))),
    "relaxation": ("#D55E00", "-."),
    "relaxation_past_relu": ("#CC79A7", (0, (1, 1.5))),
    "linear_ramp": ("#009E73", (0, (8, 2, 1, 2))),
    "four_stage": ("#E69F00", (0, (3, 1, 1, 1, 1, 1))),
}
SPARE_COLOURS = ("#56B4E9", "#7F3C8D", "#11A579", "#3969AC", "#E73F74")
SCHEDULE_GREYS = ("#555555", "#888888", "#AAAAAA", "#333333")
SCHEDULE_LINES = ((0, (1, 1)), (0, (4, 1.5)), (0, (6, 2, 1, 2)), (0, (2, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
OUTCOME_STYLE = {stats.FOR: ("#009E73", "o"), stats.AGAINST: ("#D55E00", "X"),
                 stats.NEITHER: ("#777777", "s")}
ZERO_FLOOR = 1e-18  # deviations of exactly 0 are drawn here on log axes


def to_png(fig: Figure) -> bytes:
    """PNG bytes of a figure (DPI above, no timestamp metadata; the constrained layout keeps
    every label inside the canvas, so no second, "tight" drawing pass is needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def method_style(method: str, order: list[str]) -> tuple[str, object]:
    if method in METHOD_STYLE:
        return METHOD_STYLE[method]
    i = order.index(method) if method in order else 0
    return SPARE_COLOURS[i % len(SPARE_COLOURS)], "-"


def stage_boundaries(method: dict, steps: int) -> list[int]:
    """Global steps where a method's stages switch (a ramp's start and end included), from its
    definition in plan/grid.json (stages as fractions of the budget)."""
    from hrta.grid import Method

    stages = tuple((st["fraction"], st["s_from"], st["s_to"], st["ramp"])
                   for st in method["stages"])
    spec_stages = Method("m", method["family"], stages).homotopy(steps)
    bounds, k = [], 0
    for st in spec_stages[:-1]:
        k += st["steps"]
        bounds.append(k)
    return bounds


def plain_log_axis(ax, which: str = "y", at: list[float] | None = None) -> None:
    """Log-scale ticks written plainly ("0.2", "1e-06"): at 1, 2 and 5 times powers of ten,
    or exactly at ``at``."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_locator(FixedLocator(sorted(at)) if at is not None
                           else LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


def _with_rc(fn):
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# ---------------------------------------------------------------------------- per task


def curve_keys(bundle: Bundle) -> list[tuple[str, str]]:
    """(method, schedule) pairs drawn in the loss curves: each HRTA method with each HRTA
    schedule, and ReLU with every baseline schedule."""
    keys = []
    for method, m in bundle.grid_doc["methods"].items():
        scheds = bundle.grid["hrta_schedules"] if m["family"] == "hrta" else \
            bundle.grid["baseline_schedules"]
        keys += [(method, s) for s in scheds]
    return keys


@_with_rc
def loss_curves(bundle: Bundle, group: Group, task: str) -> Figure:
    """Training loss against step for one task: a panel per optimizer label; per (method,
    schedule) the median over seeds with the interquartile band; stage switches marked."""
    runs = group.frame[group.frame["task"] == task]
    hist = bundle.histories[bundle.histories["run_id"].isin(runs["run_id"])]
    hist = hist.merge(runs[["run_id", *CELL[1:], "seed"]], on="run_id")
    labels = list(bundle.grid["optimizers"])
    methods = list(bundle.grid_doc["methods"])
    main_sched = bundle.grid["hrta_schedules"][0]
    ncols = 2 if len(labels) == 4 else min(len(labels), 3)
    nrows = math.ceil(len(labels) / ncols)
    fig = _figure(4.6 * ncols + 0.4, 3.3 * nrows + 0.9)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    handles: dict[str, Line2D] = {}
    others = [s for s in bundle.grid["baseline_schedules"] if s != main_sched]
    for ax, label in zip(axes, labels, strict=False):
        part = hist[hist["optimizer_label"] == label]
        for method, sched in curve_keys(bundle):
            sub = part[(part["method"] == method) & (part["schedule"] == sched)]
            if sub.empty:
                continue
            table = sub.pivot_table(index="step", columns="seed", values="train_loss",
                                    aggfunc="first").sort_index()
            values = table.to_numpy(dtype=np.float64, copy=True)
            values[~np.isfinite(values)] = np.nan
            ok = np.isfinite(values).any(axis=1)
            steps = table.index.to_numpy()[ok]
            values = values[ok]
            if steps.size == 0:
                continue
            q1, med, q3 = np.nanquantile(values, [0.25, 0.5, 0.75], axis=1)
            if sched == main_sched:
                colour, line = method_style(method, methods)
                width = 2.0 if method == "relu" else 1.7
                name = method if len(bundle.grid["hrta_schedules"]) == 1 else \
                    f"{method} ({sched})"
            else:
                j = others.index(sched) % len(SCHEDULE_GREYS)
                colour, line, width = SCHEDULE_GREYS[j], SCHEDULE_LINES[j], 1.2
                name = f"{method} ({sched} LR)"
            (h,) = ax.plot(steps, med, color=colour, linestyle=line, linewidth=width, label=name)
            ax.fill_between(steps, q1, q3, color=colour, alpha=0.13, linewidth=0)
            handles.setdefault(name, h)
            bounds = stage_boundaries(bundle.grid_doc["methods"][method], bundle.steps)
            if bounds and sched == main_sched:
                yb = np.exp(np.interp(bounds, steps, np.log(np.maximum(med, 1e-300))))
                ax.plot(bounds, yb, linestyle="none", marker="D", markersize=5.5,
                        markerfacecolor=colour, markeredgecolor="white", markeredgewidth=0.8,
                        zorder=5)
        opt = bundle.grid["optimizers"][label]
        ax.set_title(f"optimizer {label} ({opt['name']}"
                     f"{', batch ' + str(opt['batch_size']) if opt.get('batch_size') else ''})")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss L_s (log scale)")
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    handles["stage switch"] = Line2D([], [], linestyle="none", marker="D", color="#444444",
                                     markeredgecolor="white", markersize=6)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=min(len(handles), 4), frameon=False)
    fig.suptitle(f"{task}: training loss, median and interquartile band over "
                 f"{group.seeds} seed(s) ({group.label}, width {bundle.width})")
    return fig


def _cell_label(row) -> str:
    return f"{row['method']} · {row['optimizer_label']} · {row['schedule']}"


def cell_summary(bundle: Bundle, group: Group, task: str) -> pd.DataFrame:
    """One row per cell of a task: labels, seeds, median/IQR final loss, median/IQR steps and
    seconds to each threshold (inf: the median run did not reach it; IQR with inf likewise),
    geometric mean of test MSE and test relative L2 with 95% intervals; sorted by median
    final training loss."""
    runs = group.frame[group.frame["task"] == task]
    rows = []
    for key, part in runs.groupby(list(CELL), sort=False):
        row = dict(zip(CELL, key, strict=True))
        row["family"] = part["family"].iloc[0]
        row["lr"] = float(part["lr"].iloc[0])
        row["seeds"] = int(part["seed"].nunique())
        row["diverged"] = int(part["diverged"].astype(bool).sum())
        loss = 10 ** part["score"].to_numpy(dtype=np.float64)
        row["loss_q1"], row["loss_median"], row["loss_q3"] = stats.median_iqr(loss)
        for thr in bundle.thresholds:
            t = threshold_name(thr)
            for kind in ("steps", "seconds"):
                col = f"{kind}_to_{t}"
                if col not in part:
                    continue
                vals = part[col].astype("Float64").fillna(np.inf).astype("float64").to_numpy()
                q1, med, q3 = stats.quantiles_inf(vals, [0.25, 0.5, 0.75])
                row[f"{kind}_{t}_q1"], row[f"{kind}_{t}"], row[f"{kind}_{t}_q3"] = q1, med, q3
                if kind == "steps":
                    row[f"reached_{t}"] = int(np.isfinite(vals).sum())
        for metric in ("test_mse", "test_rel_l2"):
            gm = stats.geometric_mean_ci(part[metric].to_numpy(dtype=np.float64))
            row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = gm or (None, None, None)
        row["us_per_step"] = float(np.median(part["train_seconds"].to_numpy(dtype=np.float64)
                                             / np.maximum(part["steps"].to_numpy(
                                                 dtype=np.float64), 1)) * 1e6)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return out.sort_values(["loss_median", "method", "optimizer_label", "schedule"],
                           kind="stable").reset_index(drop=True)


@_with_rc
def threshold_panels(bundle: Bundle, group: Group, task: str) -> Figure:
    """Per cell of a task: median steps and seconds to each loss threshold (IQR whiskers;
    hollow markers at the right edge: the median run did not reach it) and the test MSE
    (geometric mean with 95% interval)."""
    cells = cell_summary(bundle, group, task)
    n = max(len(cells), 1)
    fig = _figure(11.5, 0.27 * n + 1.9)
    axes = fig.subplots(1, 3, sharey=True)
    y = np.arange(len(cells))[::-1]
    thr_names = [threshold_name(t) for t in bundle.thresholds]
    offsets = np.linspace(-0.22, 0.22, len(thr_names)) if len(thr_names) > 1 else [0.0]
    for ax, kind, unit in ((axes[0], "steps", "steps to threshold"),
                           (axes[1], "seconds", "seconds to threshold\n(compile excluded)")):
        finite = [v for t in thr_names for v in cells.get(f"{kind}_{t}", pd.Series(dtype=float))
                  if np.isfinite(v)]
        right = (bundle.steps if kind == "steps" else (max(finite) if finite else 1.0)) * 1.1
        for j, (t, off) in enumerate(zip(thr_names, offsets, strict=True)):
            col = f"{kind}_{t}"
            if col not in cells:
                continue
            med = cells[col].to_numpy(dtype=np.float64)
            q1 = cells[f"{col}_q1"].to_numpy(dtype=np.float64)
            q3 = cells[f"{col}_q3"].to_numpy(dtype=np.float64)
            reached = np.isfinite(med)
            colour = SPARE_COLOURS[j % len(SPARE_COLOURS)] if j else "#0072B2"
            marker = MARKERS[j % len(MARKERS)]
            yy = y + off
            ax.hlines(yy[reached], q1[reached], np.minimum(q3[reached], right), color=colour,
                      linewidth=1.2)
            ax.plot(med[reached], yy[reached], linestyle="none", marker=marker, color=colour,
                    markersize=5, label=f"loss <= {float(t):g}")
            ax.plot(np.full((~reached).sum(), right), yy[~reached], linestyle="none",
                    marker=marker, markerfacecolor="white", color=colour, markersize=5)
        ax.axvline(right, color="#bbbbbb", linewidth=0.8)
        ax.set_xlim(0, right * 1.04)
        ax.set_xlabel(unit)
    handles, names = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="white",
                          color="#444444"))
    names.append("hollow, at the right edge: the median run did not reach it")
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), frameon=False)
    ax = axes[2]
    if len(cells):
        gm = cells["test_mse"].to_numpy(dtype=np.float64)
        lo = cells["test_mse_low"].to_numpy(dtype=np.float64)
        hi = cells["test_mse_high"].to_numpy(dtype=np.float64)
        have = np.isfinite(lo) & np.isfinite(hi)
        ax.hlines(y[have], lo[have], hi[have], color="#444444", linewidth=1.4)
        ax.plot(gm, y, linestyle="none", marker="o", color="#000000", markersize=4.5)
        ax.set_xscale("log")
    ax.set_xlabel("test MSE: geometric mean\nand 95% CI (log scale)")
    axes[0].set_yticks(y, [_cell_label(r) for _, r in cells.iterrows()])
    axes[0].set_ylim(-0.7, len(cells) - 0.3)
    fig.suptitle(f"{task}: speed and test error per method · optimizer · LR schedule "
                 f"({group.label}, {group.seeds} seed(s); sorted by median final training loss)")
    return fig


# ---------------------------------------------------------------------------- claims


RATIO_TICKS = (1.01, 1.02, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1e3, 1e4,
               1e6, 1e9, 1e12)


def ratio_axis(ax, values: list[float]) -> None:
    """A log x axis centred on the ratio 1, wide enough for ``values`` (positive ratios), with a
    few plainly written ticks on each side (r and 1 / r)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    logs = [abs(math.log10(v)) for v in values if v > 0 and math.isfinite(v)]
    half = max(logs + [math.log10(1.02)]) * 1.12
    ax.set_xscale("log")
    ax.set_xlim(10 ** -half, 10 ** half)
    picked: list[float] = []
    for r in reversed([r for r in RATIO_TICKS if math.log10(r) <= half]):
        if not picked or math.log10(r) <= math.log10(picked[-1]) / 2.2:
            picked.append(r)
        if len(picked) == 3:
            break
    ticks = sorted({1.0, *picked, *(1 / r for r in picked)})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


@_with_rc
def forest(tests: list[Test], title: str, facet: bool = True) -> Figure:
    """Paired effects: per test the geometric-mean loss ratio HRTA / comparator (10 ** mean
    paired log10 difference) with its bootstrap 95% interval, coloured and shaped by outcome.
    ``facet``: a panel per optimizer label of the HRTA side (claims (a), (b): each comparison
    is within one optimizer); otherwise one panel with every comparison spelled out."""
    shown = [t for t in tests if t.paired.mean_diff is not None]
    if facet:
        panels = list(dict.fromkeys(t.hrta[1] for t in shown)) or ["-"]
        scheds = {t.hrta[2] for t in shown}

        def key(t):
            return (t.task, t.hrta[0], t.hrta[2])

        def name(k):
            return f"{k[0]}: {k[1]}" + (f" ({k[2]})" if len(scheds) > 1 else "")
    else:
        panels = ["all"]

        def key(t):
            return (t.task, t.hrta, t.other)

        def name(k):
            h, o = k[1], k[2]
            return f"{k[0]}: {h[0]} ({h[1]}, {h[2]})\nvs {o[0]} ({o[1]}, {o[2]})"
    rows = list(dict.fromkeys(key(t) for t in shown))
    per_row = 0.3 if facet else 0.5
    fig = _figure(max(6.5, 2.9 * len(panels) + 3.2), per_row * max(len(rows), 1) + 2.0)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)).ravel()
    ypos = {r: len(rows) - 1 - i for i, r in enumerate(rows)}
    ratios = []
    for t in shown:
        ratios += [10 ** t.paired.mean_diff]
        if t.paired.ci_low is not None:
            ratios += [10 ** t.paired.ci_low, 10 ** t.paired.ci_high]
    for ax, panel in zip(axes, panels, strict=True):
        for t in shown:
            if facet and t.hrta[1] != panel:
                continue
            yv = ypos[key(t)]
            colour, marker = OUTCOME_STYLE.get(t.outcome, ("#777777", "s"))
            if t.paired.ci_low is not None:
                ax.hlines(yv, 10 ** t.paired.ci_low, 10 ** t.paired.ci_high, color=colour,
                          linewidth=1.5)
            ax.plot(10 ** t.paired.mean_diff, yv, marker=marker, color=colour, markersize=6,
                    linestyle="none")
        ax.axvline(1.0, color="#000000", linewidth=0.9)
        ratio_axis(ax, ratios)
        ax.set_xlabel("loss ratio HRTA / comparator\n(< 1: HRTA lower; log scale)")
        if facet:
            ax.set_title(f"optimizer {panel}")
    axes[0].set_yticks([ypos[r] for r in rows], [name(r) for r in rows])
    axes[0].set_ylim(-0.7, max(len(rows), 1) - 0.3)
    handles = [Line2D([], [], color=c, marker=m, linestyle="-", label=o)
               for o, (c, m) in OUTCOME_STYLE.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False,
               title="outcome after Holm's correction (line: bootstrap 95% CI)")
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- agreement


@_with_rc
def agreement_strips(table: pd.DataFrame) -> Figure:
    """Per (backend, dtype): each compared run's largest relative deviation from the reference
    of the training loss (over logged steps) and of the final parameters (normwise), log
    scale, with the tolerance (short bar: the largest tolerance used in that group)."""
    groups = list(table.groupby(["backend", "dtype"], sort=True))
    fig = _figure(min(13.0, max(8.0, 1.3 * len(groups) + 3.0)), 4.4)
    axes = fig.subplots(1, 2)
    rng = np.random.default_rng(0)
    for ax, col, tol, what in ((axes[0], "max_rel_loss", "loss_rtol",
                                "training loss, every logged step"),
                               (axes[1], "max_rel_params", "params_rtol",
                                "final parameters (normwise)")):
        for i, (_, part) in enumerate(groups):
            vals = part[col].astype("float64").to_numpy()
            vals = np.where(np.isfinite(vals), np.maximum(vals, ZERO_FLOOR), np.nan)
            passed = part["passed"].astype(bool).to_numpy()
            x = i + rng.uniform(-0.18, 0.18, size=vals.size)
            ax.plot(x[passed], vals[passed], linestyle="none", marker="o", markersize=4,
                    color="#0072B2", alpha=0.75)
            ax.plot(x[~passed], vals[~passed], linestyle="none", marker="X", markersize=7,
                    color="#D55E00")
            t = part[tol].astype("float64").max()
            if np.isfinite(t) and t > 0:
                ax.hlines(t, i - 0.35, i + 0.35, color="#000000", linewidth=2)
        ax.set_xticks(range(len(groups)), [f"{b}\n{d}" for (b, d), _ in groups])
        ax.set_yscale("log")
        ax.set_ylabel("largest relative deviation (log scale)")
        ax.set_title(what)
    handles = [Line2D([], [], color="#0072B2", marker="o", linestyle="none", label="run passed"),
               Line2D([], [], color="#D55E00", marker="X", linestyle="none", label="run failed"),
               Line2D([], [], color="#000000", linewidth=2, label="tolerance (largest)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(f"Agreement with the NumPy reference (exact 0 drawn at {ZERO_FLOOR:g})")
    return fig


# ---------------------------------------------------------------------------- theory


@_with_rc
def spectrum_plot(spectrum: pd.DataFrame) -> Figure:
    """lambda_min (log-log, with an s^2 reference line per task) and the condition number of
    the closed-form NTK against s, per task."""
    fig = _figure(10.5, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    tasks = list(dict.fromkeys(spectrum["task"]))
    for i, task in enumerate(tasks):
        part = spectrum[(spectrum["task"] == task) & (spectrum["s"] > 0)].sort_values("s")
        colour = (SPARE_COLOURS + ("#0072B2", "#D55E00"))[i % 7]
        marker = MARKERS[i % len(MARKERS)]
        s = part["s"].to_numpy(dtype=np.float64)
        lam = part["lambda_min"].to_numpy(dtype=np.float64)
        ok = lam > 0
        ax1.plot(s[ok], lam[ok], marker=marker, color=colour, label=task)
        if ok.any():
            ref = lam[ok][-1] * (s[ok] / s[ok][-1]) ** 2
            ax1.plot(s[ok], ref, color=colour, linestyle=":", linewidth=1)
        cond = part["condition"].to_numpy(dtype=np.float64)
        fin = np.isfinite(cond)
        ax2.plot(s[fin], cond[fin], marker=marker, color=colour, label=task)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    plain_log_axis(ax1, "x", sorted(spectrum.loc[spectrum["s"] > 0, "s"].unique()))
    plain_log_axis(ax1, "y")
    ax1.set_xlabel("homotopy parameter s (log scale)")
    ax1.set_ylabel("lambda_min of H_s + K_s (log scale)")
    ax1.set_title("smallest eigenvalue (dotted: proportional to s^2)")
    ax2.set_yscale("log")
    plain_log_axis(ax2, "y")
    ax2.set_xlabel("homotopy parameter s")
    ax2.set_ylabel("condition number lambda_max / lambda_min (log)")
    ax2.set_title("condition number")
    ax2.legend(frameon=False)
    fig.suptitle("Closed-form infinite-width NTK on each task's training inputs")
    return fig


@_with_rc
def ntk_width_plot(table: pd.DataFrame) -> Figure:
    """Relative Frobenius error of the empirical NTK (each backend's autodiff) against the
    closed form, against the width: a panel per task, RMS over seeds per backend (line) and
    each seed (points), with a width^(-1/2) reference."""
    tasks = list(dict.fromkeys(table["task"]))
    ncols = min(len(tasks), 4) or 1
    nrows = math.ceil(len(tasks) / ncols) or 1
    fig = _figure(3.2 * ncols + 0.6, 3.0 * nrows + 1.0)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    backends = sorted(table["backend"].unique())
    for ax, task in zip(axes, tasks, strict=False):
        part = table[table["task"] == task]
        for j, backend in enumerate(backends):
            b = part[part["backend"] == backend]
            if b.empty:
                continue
            colour = ("#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7")[j % 5]
            rms = b.groupby("width")["rel_error"].apply(lambda v: float(np.sqrt(np.mean(
                np.square(v)))))
            ax.plot(rms.index, rms.to_numpy(), color=colour, marker=MARKERS[j % len(MARKERS)],
                    label=backend, linestyle=("-", "--", "-.", ":")[j % 4])
            ax.plot(b["width"], b["rel_error"], linestyle="none", marker=".", color=colour,
                    alpha=0.5)
        w = np.array(sorted(part["width"].unique()), dtype=np.float64)
        if w.size:
            first = part[part["width"] == w[0]]["rel_error"]
            anchor = float(np.sqrt(np.mean(np.square(first))))
            ax.plot(w, anchor * (w / w[0]) ** -0.5, color="#999999", linestyle=":",
                    label="width^-1/2")
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_axis(ax, "x", list(w))
        plain_log_axis(ax, "y")
        ax.set_title(task)
        ax.set_xlabel("width m (log scale)")
        ax.set_ylabel("relative error of the NTK")
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), frameon=False)
    s_val = table["s"].iloc[0] if len(table) else float("nan")
    fig.suptitle(f"Empirical NTK at initialisation vs the closed form (s = {s_val:g})")
    return fig


@_with_rc
def rates_plot(rates: pd.DataFrame) -> Figure:
    """Measured against predicted per-step decay exponents kappa = -ln(rate) of full-batch GD,
    per constant-s stage; colour: width, marker: s; the diagonal is equality."""
    fig = _figure(6.8, 5.2)
    ax = fig.subplots()
    ok = rates.copy()
    ok = ok[np.isfinite(ok["kappa_predicted"].astype("float64"))
            & np.isfinite(ok["kappa_measured"].astype("float64"))
            & (ok["kappa_predicted"] > 0) & (ok["kappa_measured"] > 0)]
    if ok.empty:
        ax.text(0.5, 0.5, "no full-batch GD stage with a measurable rate", ha="center",
                va="center", transform=ax.transAxes)
        return fig
    widths = sorted(ok["width"].unique())
    s_vals = sorted(ok["s"].unique())
    cmap = matplotlib.colormaps["viridis"]
    for i, w in enumerate(widths):
        colour = cmap(0.1 + 0.8 * i / max(len(widths) - 1, 1))
        for j, s in enumerate(s_vals):
            part = ok[(ok["width"] == w) & (ok["s"] == s)]
            if part.empty:
                continue
            ax.plot(part["kappa_predicted"], part["kappa_measured"], linestyle="none",
                    marker=MARKERS[j % len(MARKERS)], color=colour, markersize=6, alpha=0.85,
                    markeredgecolor="black", markeredgewidth=0.4)
    lo = float(min(ok["kappa_predicted"].min(), ok["kappa_measured"].min()))
    hi = float(max(ok["kappa_predicted"].max(), ok["kappa_measured"].max()))
    ax.plot([lo, hi], [lo, hi], color="#000000", linewidth=1, label="measured = predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted decay per step, -ln(1 - lr lambda_min / n) (log)")
    ax.set_ylabel("measured decay per step, late half of the stage (log)")
    handles = [Line2D([], [], color=cmap(0.1 + 0.8 * i / max(len(widths) - 1, 1)), marker="o",
                      linestyle="none", label=f"width {w}") for i, w in enumerate(widths)]
    handles += [Line2D([], [], color="#555555", marker=MARKERS[j % len(MARKERS)],
                       linestyle="none", label=f"s = {s:g}") for j, s in enumerate(s_vals)]
    handles.append(Line2D([], [], color="#000000", label="measured = predicted"))
    fig.legend(handles=handles, frameon=False, loc="outside right upper", fontsize=8.5)
    ax.set_title("GD rates per stage (above the diagonal: faster than predicted)")
    return fig
