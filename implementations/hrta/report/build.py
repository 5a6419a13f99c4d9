"""Assemble the report from a results folder and write it to ``<out>/<report-id>/``:

* ``report.html``: one self-contained page (inline CSS, figures as base64 PNG, no script);
* ``report.md`` and ``figures/<id>.png``: the Markdown twin;
* ``certificate.json``: the agreement certificate; ``claims.json``: every verdict and test;
  ``provenance.json``; ``citation.bib``.

Every number shown is computed here from the results tables (:mod:`hrta.report.load`).
``hrta report RESULTS_DIR --only ID`` regenerates a single figure (PNG) or table (CSV).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import multiprocessing
import sys
from pathlib import Path

import pandas as pd

from hrta import atomic
from hrta.aggregate import plain, threshold_name
from hrta.report import claims as cl
from hrta.report import figures as fg
from hrta.report import stats
from hrta.report.certificate import certificate
from hrta.report.document import Code, Document, Figure, Section, Table, Text, to_html, to_markdown
from hrta.report.load import Bundle, load_bundle, report_id
from hrta.report.provenance import bibtex, citation_cff, code_version, provenance

DASH = "—"


# ---------------------------------------------------------------------------- formatting


def fmt(value, digits: int = 3) -> str:
    """A number for a table: 3 significant digits, — for missing, inf as 'inf'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return DASH
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.{digits}g}"


def fmt_p(p) -> str:
    if p is None:
        return DASH
    return "<1e-4" if p < 1e-4 else f"{p:.2g}"


def fmt_ratio(mean_diff, low, high) -> str:
    """Geometric-mean loss ratio 10 ** mean with its interval."""
    if mean_diff is None:
        return DASH
    text = fmt(10 ** mean_diff)
    if low is not None:
        text += f" [{fmt(10 ** low)}, {fmt(10 ** high)}]"
    return text


def fmt_iqr(med, q1, q3) -> str:
    if med is None or (isinstance(med, float) and math.isnan(med)):
        return DASH
    if isinstance(med, float) and math.isinf(med):
        return "not reached"
    return f"{fmt(med)} [{fmt(q1)}, {fmt(q3)}]"


def fmt_steps(value: float, steps: int) -> str:
    return f">{steps}" if math.isinf(value) else fmt(value)


def frame_table(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    return list(map(str, frame.columns)), [[fmt(v) if not isinstance(v, str) else v
                                            for v in row] for row in frame.itertuples(False)]


class Commands:
    """The shell commands that regenerate the report and each of its parts."""

    def __init__(self, results_dir: str, out_root: str, grid: str):
        self.results, self.out, self.grid = results_dir, out_root, grid

    @property
    def pipeline(self) -> str:
        return f"snakemake -c2 --config grid={self.grid}"

    @property
    def report(self) -> str:
        return f"hrta report {self.results} --out {self.out}"

    def only(self, item_id: str) -> str:
        return f"hrta report {self.results} --only {item_id} --out ."


# ---------------------------------------------------------------------------- sections


def _test_rows(tests: list[cl.Test], steps: int, with_group: bool,
               ) -> tuple[list, list, pd.DataFrame]:
    header = ["task", "comparison", *(["backend · dtype"] if with_group else []), "seeds",
              "loss ratio [95% CI]", "d_z", "p (t)", "p (Holm)", "p (Wilcoxon)",
              "HRTA better / worse", "median steps to threshold (HRTA vs other)", "outcome"]
    rows, data = [], []
    for t in tests:
        p = t.paired
        steps_text = "; ".join(f"{k}: {fmt_steps(a, steps)} vs {fmt_steps(b, steps)}"
                               for k, (a, b) in t.steps.items())
        rows.append([t.task, t.comparison, *([f"{t.backend} · {t.dtype}"] if with_group else []),
                     str(p.n), fmt_ratio(p.mean_diff, p.ci_low, p.ci_high), fmt(p.d_z),
                     fmt_p(p.p_t), fmt_p(t.p_holm), fmt_p(p.p_wilcoxon),
                     f"{p.wins} / {p.losses}", steps_text, t.outcome])
        data.append(t.to_dict())
    return header, rows, pd.json_normalize(data) if data else pd.DataFrame()


def _verdict_table(claim: cl.ClaimResult, cmd: Commands) -> Table:
    header = ["backend", "dtype", "verdict", "tests", "for", "against", "neither", "no data",
              "seeds", "note"]
    rows = [[v.backend, v.dtype, v.verdict, str(v.counts["tests"]), str(v.counts["for"]),
             str(v.counts["against"]), str(v.counts["neither"]), str(v.counts["no_data"]),
             fmt(v.counts.get("seeds")), v.note] for v in claim.verdicts]
    data = pd.DataFrame([v.to_dict() for v in claim.verdicts])
    tid = f"claim-{claim.key}-verdicts"
    return Table(tid, f"Claim ({claim.key}): verdict per backend and dtype", header, rows, data,
                 "Counts are of tests (claims (a)-(c)) or tasks (claims (d), (e)); 'for': "
                 "significant in HRTA's favour, or the task's check reproduced.", cmd.only(tid))


def overview_section(results: list[cl.ClaimResult], bundle: Bundle, cmd: Commands) -> Section:
    header = ["claim", "statement", "verdict", "on", "other backends and dtypes"]
    rows, data = [], []
    for c in results:
        first = c.verdicts[0] if c.verdicts else None
        others = "; ".join(f"{v.backend} {v.dtype}: {v.verdict}" for v in c.verdicts[1:])
        rows.append([f"({c.key}) {c.title}", c.statement, first.verdict if first else DASH,
                     f"{first.backend} · {first.dtype}" if first else DASH, others or DASH])
        data.append({"claim": c.key, "title": c.title, "statement": c.statement,
                     "verdict": first.verdict if first else None,
                     "backend": first.backend if first else None,
                     "dtype": first.dtype if first else None, "others": others})
    blocks = []
    desc = (bundle.grid.get("description") or "").strip()
    if desc:
        blocks.append(Text(f"Grid `{bundle.name}`: {desc}", "note"))
    n_seeds = len(bundle.grid["evaluation"]["seeds"])
    blocks.append(Text(
        f"Does HRTA do what the paper claims, against fairly tuned baselines, and do the "
        f"frameworks agree? Each claim below gets a verdict from a rule stated in advance "
        f"(Claims section), computed from the results tables. Statistics use the "
        f"{n_seeds} evaluation seeds of the declared evaluation backend "
        f"(`{bundle.eval_backend}`, {bundle.dtype}); the other backends run each "
        f"configuration at fewer seeds and are held against the reference in the agreement "
        f"certificate."))
    blocks.append(Table("claims-overview", "Verdicts", header, rows, pd.DataFrame(data),
                        "Verdict on the primary evidence (the evaluation backend for (a)-(c); "
                        "the closed form for (d); the first backend for (e)).",
                        cmd.only("claims-overview")))
    cert = bundle.agreement_summary or {}
    if cert:
        state = "all passed" if cert.get("all_passed") else f"{cert.get('failed')} FAILED"
        blocks.append(Text(f"Agreement with the reference: {cert.get('compared', 0)} runs "
                           f"compared, {state} (see Agreement certificate)."))
    return Section("summary", "Summary", blocks)


def claims_sections(results: list[cl.ClaimResult], bundle: Bundle,
                    cmd: Commands) -> list[Section]:
    out = [Section("claims", "Claims", [Text(
        f"Decision rules. Significance level {stats.ALPHA}; bootstrap intervals from "
        f"{stats.BOOTSTRAP} resamples of the seeds (generator seed {stats.BOOTSTRAP_SEED}). "
        f"A loss ratio is the geometric mean over seeds of the HRTA run's final loss over its "
        f"comparator's (< 1: HRTA trains faster). d_z is the mean paired difference of log10 "
        f"losses over its standard deviation. Wilcoxon's signed-rank p-value is shown as a "
        f"check that needs no normality; with 5 seeds it cannot go below 0.0625, so verdicts "
        f"use the t-test.")])]
    for c in results:
        blocks = [Text(f"Claim: {c.statement}"), Text(f"Measure: {c.measure}."),
                  Text(f"Rule: {c.rule}", "note"), _verdict_table(c, cmd)]
        if c.tests:
            primary = [t for t in c.tests if (t.backend, t.dtype) ==
                       (c.verdicts[0].backend, c.verdicts[0].dtype)]
            fid = f"claim-{c.key}-forest"
            blocks.append(Figure(
                fid, f"Claim ({c.key}): paired effects on {c.verdicts[0].backend} "
                     f"{c.verdicts[0].dtype}",
                "Each row is one test: the geometric-mean ratio of final training losses, HRTA "
                "over comparator, across the paired seeds (marker) and its bootstrap 95% "
                "interval (line); colour and shape give the outcome after Holm's correction.",
                lambda tests=primary, key=c.key: fg.forest(
                    tests, f"Claim ({key}): final-loss ratio HRTA / comparator",
                    facet=key != "c"),
                cmd.only(fid)))
            with_data = [t for t in c.tests if t.paired.p_t is not None]
            header, rows, data = _test_rows(with_data, bundle.steps, with_group=True)
            tid = f"claim-{c.key}-tests"
            blocks.append(Table(tid, f"Claim ({c.key}): every test with at least 2 paired seeds",
                                header, rows, data,
                                "Steps to threshold: median over the paired seeds of the first "
                                "logged step at or below the threshold (>K: the median run did "
                                "not reach it).", cmd.only(tid)))
        if c.key == "d" and c.details:
            header = ["task", "slope of ln lambda_min vs ln s", "secant slope",
                      "theoretical slope range", "increasing", "dim null(C)", "verdict"]
            rows = [[d["task"], fmt(d["slope"], 5), fmt(d["secant_slope"], 5),
                     (f"[{fmt(d['slope_bounds'][0], 5)}, {fmt(d['slope_bounds'][1], 5)}]"
                      if d.get("slope_bounds") and d["slope_bounds"][0] is not None else DASH),
                     fmt(d["increasing"]), fmt(d["null_dim"]), d["verdict"]]
                    for d in c.details]
            blocks.append(Table("claim-d-tasks", "Claim (d): the s^2 check per task", header,
                                rows, pd.DataFrame(c.details),
                                "From theory/checks.json; the spectra are in the Theory "
                                "section.", cmd.only("claim-d-tasks")))
        if c.key == "e" and c.details:
            header = ["backend", "task", "widths", "log-log slope (RMS over seeds)",
                      "95% t-interval of per-seed slopes", "consistent with -1/2", "verdict"]
            rows = [[d["backend"], d["task"], ", ".join(map(str, d["widths"] or [])),
                     fmt(d["slope"]),
                     f"[{fmt(d['ci'][0])}, {fmt(d['ci'][1])}]" if d.get("ci") else DASH,
                     fmt(d["consistent_with_inverse_sqrt"]), d["verdict"]] for d in c.details]
            blocks.append(Table("claim-e-tasks", "Claim (e): the width check per backend and "
                                "task", header, rows, pd.DataFrame(c.details),
                                "From theory/checks.json; the errors are plotted in the Theory "
                                "section.", cmd.only("claim-e-tasks")))
        out.append(Section(f"claim-{c.key}", f"({c.key}) {c.title}", blocks, level=3))
    return out


def _cells_table(bundle: Bundle, group: cl.Group, task: str, cmd: Commands) -> Table:
    cells = fg.cell_summary(bundle, group, task)
    thr = [threshold_name(t) for t in bundle.thresholds]
    header = ["method · optimizer · schedule", "lr", "seeds", "final train loss median [IQR]"]
    header += [f"steps to {float(t):g} (reached)" for t in thr]
    header += [f"seconds to {float(t):g}" for t in thr]
    header += ["test MSE [95% CI]", "test rel. L2 [95% CI]", "µs / step", "diverged"]
    rows = []
    for _, r in cells.iterrows():
        row = [f"{r['method']} · {r['optimizer_label']} · {r['schedule']}", fmt(r["lr"]),
               str(r["seeds"]), fmt_iqr(r["loss_median"], r["loss_q1"], r["loss_q3"])]
        for t in thr:
            if f"steps_{t}" in r:
                row.append(f"{fmt_iqr(r[f'steps_{t}'], r[f'steps_{t}_q1'], r[f'steps_{t}_q3'])}"
                           f" ({r[f'reached_{t}']}/{r['seeds']})")
            else:
                row.append(DASH)
        for t in thr:
            row.append(fmt_iqr(r.get(f"seconds_{t}"), r.get(f"seconds_{t}_q1"),
                               r.get(f"seconds_{t}_q3")))
        for m in ("test_mse", "test_rel_l2"):
            row.append(f"{fmt(r[m])} [{fmt(r[m + '_low'])}, {fmt(r[m + '_high'])}]")
        row += [fmt(r["us_per_step"]), str(r["diverged"])]
        rows.append(row)
    tid = f"task-{task}-cells"
    return Table(tid, f"{task}: every method · optimizer · LR schedule at its tuned learning rate "
                      f"({group.label})", header, rows, cells,
                 "Medians with interquartile ranges over seeds; steps and seconds to a "
                 "threshold count a run that never reached it as infinite ('not reached': the "
                 "median run did not); seconds exclude compilation; test errors are geometric "
                 "means with Student-t 95% intervals on the log scale.", cmd.only(tid))


def _lr_table(bundle: Bundle, task: str, cmd: Commands) -> Table:
    sel = bundle.selection[(bundle.selection["task"] == task)
                           & bundle.selection["chosen"].astype(bool)]
    sel = sel.sort_values(["family", "method", "optimizer_label", "schedule"])
    header = ["method", "optimizer", "schedule", "learning-rate grid", "chosen lr",
              "tuning score", "at grid edge", "all diverged"]
    rows = []
    for _, r in sel.iterrows():
        grid = json.loads(r["lr_grid"]) if isinstance(r["lr_grid"], str) else r["lr_grid"]
        rows.append([r["method"], r["optimizer_label"], r["schedule"],
                     ", ".join(fmt(v) for v in grid), fmt(r["lr"]), fmt(r["score"]),
                     fmt(bool(r.get("chosen_at_grid_edge", False))),
                     fmt(bool(r.get("all_diverged", False)))])
    rule = sel["rule_text"].iloc[0] if len(sel) else ""
    seeds = ", ".join(map(str, bundle.grid["tuning"]["seeds"]))
    tid = f"task-{task}-lr"
    return Table(tid, f"{task}: learning rates chosen by the fair tuning", header, rows,
                 sel.reset_index(drop=True),
                 f"Tuning on seeds {seeds} ({bundle.grid['tuning']['backend']}); rule: {rule}. "
                 f"A choice at the edge of the grid suggests the grid is too narrow.",
                 cmd.only(tid))


def task_sections(bundle: Bundle, cmd: Commands) -> list[Section]:
    groups = cl.eval_groups(bundle)
    primary = groups[0]
    out = [Section("tasks", "Results per task", [Text(
        f"Evaluation runs on `{primary.backend}` in {primary.dtype} at width {bundle.width}, "
        f"n = {bundle.grid['n_train']} training points, {bundle.steps} steps for every method, "
        f"each at the learning rate its fair tuning chose.")])]
    variants = cl.variant_tests(bundle, primary)
    for task in bundle.tasks:
        blocks = []
        fid = f"task-{task}-loss"
        blocks.append(Figure(fid, f"{task}: training-loss curves",
                             "Median over seeds (line) and interquartile band (shaded) of the "
                             "full-training-set loss at the current s; diamonds mark the steps "
                             "where a method's homotopy stage switches (the loss is then "
                             "evaluated at the new s, which can make it jump). HRTA methods at "
                             "their LR schedule; ReLU also at each other LR schedule (grey).",
                             lambda task=task: fg.loss_curves(bundle, primary, task),
                             cmd.only(fid)))
        fid = f"task-{task}-speed"
        blocks.append(Figure(fid, f"{task}: steps and time to the loss thresholds, and test "
                                  "error",
                             "Median and interquartile range over seeds of the steps and "
                             "seconds (compile excluded) to reach each loss threshold, and the "
                             "geometric-mean test MSE with its 95% interval.",
                             lambda task=task: fg.threshold_panels(bundle, primary, task),
                             cmd.only(fid)))
        blocks.append(_cells_table(bundle, primary, task, cmd))
        mine = [t for t in variants if t.task == task]
        if mine:
            header, rows, data = _test_rows(mine, bundle.steps, with_group=False)
            tid = f"task-{task}-variants"
            blocks.append(Table(tid, f"{task}: each HRTA variant (its best-tuned optimizer and "
                                     f"schedule) against the best tuned baseline", header, rows,
                                data, "Paired across evaluation seeds; Holm's correction across "
                                      "tasks for each variant. Evidence, not part of a verdict "
                                      "(claim (c) uses the best variant).",
                                cmd.only(tid)))
        blocks.append(_lr_table(bundle, task, cmd))
        out.append(Section(f"task-{task}", task, blocks, level=3))
    return out


def agreement_section(bundle: Bundle, cert: dict, cmd: Commands) -> Section:
    blocks = [Text(f"Every evaluation run of a backend other than the reference "
                   f"(`{cert['reference_backend']}`) is compared with the reference run of the "
                   f"identical spec, in the same dtype, at every logged step. Rule: "
                   f"{cert['rule']}. Machine-readable: `certificate.json` beside this report.")]
    header = ["backend", "dtype", "runs", "passed", "max rel. loss dev.", "max abs. loss dev.",
              "max rel. param dev.", "first step over tolerance", "loss rtol", "loss atol",
              "param rtol", "tolerance basis"]
    rows = []
    for r in cert["by_backend_dtype"]:
        rtol = fmt(r["loss_rtol_min"]) if r["loss_rtol_min"] == r["loss_rtol_max"] else \
            f"{fmt(r['loss_rtol_min'])} to {fmt(r['loss_rtol_max'])}"
        prtol = fmt(r["params_rtol_min"]) if r["params_rtol_min"] == r["params_rtol_max"] else \
            f"{fmt(r['params_rtol_min'])} to {fmt(r['params_rtol_max'])}"
        state = "passed" if r["failed"] == 0 else "FAILED"
        if r.get("within_rounding_noise"):
            state += f" ({r['within_rounding_noise']} within rounding noise)"
        rows.append([r["backend"], r["dtype"], str(r["runs"]), state, fmt(r["max_rel_loss"]),
                     fmt(r["max_abs_loss"]), fmt(r["max_rel_params"]),
                     fmt(r["first_exceed_step"]) if r["first_exceed_step"] is not None
                     else "none", rtol, fmt(r["loss_atol_max"]), prtol, r["tolerance"]])
    blocks.append(Table("agreement-certificate", "Agreement certificate", header, rows,
                        pd.DataFrame(cert["by_backend_dtype"]),
                        f"{cert['compared']} runs compared, {cert['passed']} passed "
                        f"({cert.get('within_rounding_noise', 0)} of them beyond the arithmetic "
                        f"bound but within the float32 rounding noise of their spec), "
                        f"{cert['failed']} failed. Deviations are the largest over the group's "
                        f"runs; 'first step over tolerance' is the earliest over its runs.",
                        cmd.only("agreement-certificate")))
    if bundle.agreement is not None and not bundle.agreement.empty:
        blocks.append(Figure("agreement", "Deviation from the reference per run",
                             "Each point is one run's largest deviation; the bar is the "
                             "largest tolerance applied in that group.",
                             lambda: fg.agreement_strips(bundle.agreement),
                             cmd.only("agreement")))
    for f in cert["failures"]:
        blocks.append(Text(f"FAILED: `{f['run_id']}` (first exceeded at step "
                           f"{fmt(f['first_exceed_step'])}): {f['problem']}", "warn"))
    for b in cert["backends_not_run"]:
        blocks.append(Text(f"Backend `{b['backend']}` did not run: {b['reason']}", "warn"))
    if cert["not_compared"]:
        blocks.append(Text(f"{len(cert['not_compared'])} runs not compared: " + "; ".join(
            f"`{x['run_id']}` ({x['reason']})" for x in cert["not_compared"][:10]), "warn"))
    return Section("agreement", "Agreement certificate", blocks)


def theory_section(bundle: Bundle, cmd: Commands) -> Section:
    blocks = [Text("The infinite-width theory of HRTA-SPEC.md section 8: the closed-form NTK "
                   "H_s + K_s on each task's training inputs, the empirical NTK of each "
                   "backend at initialisation against it, and gradient-descent rates.")]
    if bundle.spectrum is not None and not bundle.spectrum.empty:
        spec = bundle.spectrum.sort_values(["task", "s"])
        header = ["task", "s", "lambda_min", "lambda_max", "condition number",
                  "lambda_min / s^2"]
        rows = [[r["task"], fmt(r["s"]), fmt(r["lambda_min"], 4), fmt(r["lambda_max"], 4),
                 fmt(r["condition"], 4), fmt(r.get("lambda_min_over_s2"), 4)]
                for _, r in spec.iterrows()]
        blocks.append(Figure("theory-spectrum", "lambda_min and condition number against s",
                             "Closed-form NTK (float64). Claim (d) expects lambda_min to "
                             "follow the dotted s^2 lines.",
                             lambda: fg.spectrum_plot(bundle.spectrum),
                             cmd.only("theory-spectrum")))
        blocks.append(Table("theory-spectrum-table", "Closed-form NTK spectrum per task and s",
                            header, rows, spec.reset_index(drop=True), "",
                            cmd.only("theory-spectrum-table")))
    if bundle.ntk_width is not None and not bundle.ntk_width.empty:
        blocks.append(Figure("theory-ntk-width", "Empirical NTK against the closed form as the "
                                                 "width grows",
                             "Relative Frobenius error ||J J^T - (H_s + K_s)|| / ||H_s + K_s|| "
                             "at initialisation, J from each backend's own automatic "
                             "differentiation; dotted: the width^-1/2 rate of a mean of m "
                             "independent terms.",
                             lambda: fg.ntk_width_plot(bundle.ntk_width),
                             cmd.only("theory-ntk-width")))
    if bundle.rates is not None:
        r = bundle.rates.copy()
        r = r[r["kappa_ratio"].notna()]
        blocks.append(Text(
            "Rates. For full-batch gradient descent in the lazy regime the residual's slowest "
            "mode shrinks by 1 - lr lambda_min / n per step. At n = 100 (the paper's sample "
            "size) lambda_min / n is so small that, within the pipeline's step budgets, "
            "training never reaches the phase where that mode alone is left: the predicted "
            "rate is a lower bound on the speed of training, not an estimate of it. A measured "
            "decay at least as fast as predicted (kappa ratio >= 1) is what the theory "
            "expects; a ratio far above 1 says the budget ended before the slowest mode "
            "dominated.", "note"))
        if not r.empty:
            header = ["backend", "width", "s", "stages", "median kappa ratio (measured / "
                      "predicted)", "share with ratio >= 1"]
            rows, data = [], []
            for (backend, width, s), part in r.groupby(["backend", "width", "s"], sort=True):
                ratio = part["kappa_ratio"].astype("float64")
                share = float((ratio >= 1).mean())
                rows.append([str(backend), str(width), fmt(s), str(len(part)),
                             fmt(float(ratio.median())), f"{share:.0%}"])
                data.append({"backend": backend, "width": width, "s": s, "stages": len(part),
                             "median_kappa_ratio": float(ratio.median()), "share_ge_1": share})
            blocks.append(Figure("theory-rates", "Measured against predicted GD rates",
                                 "Per constant-s stage of every full-batch GD evaluation run: "
                                 "the decay exponent fitted to the late half of the stage "
                                 "against the slowest-mode prediction.",
                                 lambda: fg.rates_plot(bundle.rates), cmd.only("theory-rates")))
            blocks.append(Table("theory-rates-table", "GD rates: measured over predicted decay "
                                "per step", header, rows, pd.DataFrame(data),
                                "kappa = -ln(rate per step); ratio >= 1: measured faster.",
                                cmd.only("theory-rates-table")))
    if len(blocks) == 1:
        blocks.append(Text("The theory stage did not run for this grid.", "warn"))
    return Section("theory", "Theory", blocks)


def performance_sections(bundle: Bundle) -> list[Section]:
    """The optional Performance section: the targets of ``<results>/perf/perf.json`` and its
    ``scaling.png``, written by ``python -m benchmarks.perf`` (issue 6); no section when the
    harness has not run beside this results folder."""
    folder = Path(bundle.root).parent / "perf"
    if not (folder / "perf.json").is_file():
        return []
    perf = json.loads((folder / "perf.json").read_text())
    targets = pd.DataFrame(perf["targets"], columns=["name", "value", "op", "threshold", "met",
                                                     "note"])
    rows = [[r["name"], fmt(r["value"]), f"{r['op']} {fmt(r['threshold'])}",
             "passed" if r["met"] else "FAILED", r["note"]] for _, r in targets.iterrows()]
    met = int(targets["met"].sum())
    blocks = [Text(f"Measured by `{perf['command']}` on {perf['date']} (load "
                   f"{perf['load_before']} before, {perf['load_after']} after): "
                   f"{met} of {len(targets)} targets met. docs/performance.md explains what "
                   f"is measured and why targets are missed."),
              Table("perf-targets", "Performance ratios and their targets",
                    ["target", "value", "goal", "met", "measurement"], rows, targets,
                    "Times per training step exclude compile time; the limit is max(FLOPs / "
                    "peak FLOP rate, bytes / bandwidth), both rates measured in the same run.")]
    if (folder / "scaling.png").is_file():
        png = (folder / "scaling.png").read_bytes()
        blocks.append(Figure("perf-scaling", "Training cost against width, samples and steps",
                             "Measured cost with a least-squares line (R^2 in the legend).",
                             lambda: None, png=png))
    return [Section("performance", "Performance", blocks)]


def provenance_section(prov: dict, cmd: Commands) -> Section:
    rc = prov["report_code"]
    items = [
        ("report id", prov["report_id"]), ("generated (UTC)", prov["date"]),
        ("grid", f"{prov['grid']} (digest {prov['grid_digest']})"),
        ("suite version(s) of the runs", ", ".join(prov["suite_versions"])),
        ("spec version(s)", ", ".join(prov["spec_versions"])),
        ("git commit(s) of the runs", ", ".join(prov["run_commits"]) or "unknown"),
        ("runs made from a dirty tree", ", ".join(prov["run_tree_dirty"]) or "unknown"),
        ("report code", f"hrta-bench {rc['suite_version']}, commit {rc['commit'] or 'unknown'}"
                        f"{' (dirty tree)' if rc['dirty'] else ''}"),
        ("CPU of the runs", ", ".join(prov["run_cpus"]) or "unknown"),
        ("report host", f"{prov['report_host']['cpu']} ({prov['report_host']['cores']} cores), "
                        f"{prov['report_host']['system']}, Python "
                        f"{prov['report_host']['python']}"),
        ("runs", f"{prov['runs']} ({prov['tune_runs']} tuning, {prov['eval_runs']} "
                 f"evaluation)"),
        ("run specs sha256", prov["specs_sha256"]),
    ]
    items += [(f"sha256 {name}", digest) for name, digest in prov["input_sha256"].items()]
    header = ["item", "value"]
    rows = [[k, v] for k, v in items]
    blocks = [Table("provenance", "Provenance", header, rows,
                    pd.DataFrame(items, columns=header),
                    "The input hashes fix the results tables and the resolved grid (the "
                    "config); the report id is a hash of them and of the code version.",
                    cmd.only("provenance"))]
    libs = sorted({lib for v in prov["library_versions"].values() for lib in v})
    header = ["backend", *libs]
    rows = [[b, *[v.get(lib, DASH) for lib in libs]]
            for b, v in prov["library_versions"].items()]
    blocks.append(Table("library-versions", "Library versions per backend", header, rows,
                        pd.DataFrame(rows, columns=header), "As recorded by the runs.",
                        cmd.only("library-versions")))
    return Section("provenance", "Provenance", blocks)


def citation_section(bib: str, cff: dict | None) -> Section:
    blocks = [Text("Cite this report with its id, and cite the software and the HRTA paper. "
                   "The repository's `CITATION.cff` holds the software's citation metadata "
                   "(GitHub shows it as 'Cite this repository'); `citation.bib` beside this "
                   "report has the entries below.")]
    if cff is None:
        blocks.append(Text("CITATION.cff was not found next to the code that built this "
                           "report.", "warn"))
    blocks.append(Code(bib))
    return Section("cite", "How to cite", blocks)


def reproduce_section(bundle: Bundle, cmd: Commands, rid: str) -> Section:
    return Section("reproduce", "Reproducing this report", [
        Text("From a clone of the repository at the commit in Provenance:"),
        Code(f"make install                       # or: pip install -e '.[all,dev]'\n"
             f"{cmd.pipeline}   # every run, table and this report\n"
             f"{cmd.report}   # this report only, from the tables"),
        Text(f"The report id `{rid}` is a hash of the input tables, the resolved grid and the "
             f"code version: the same inputs and code give the same id. Each figure and table "
             f"above names the command that regenerates it alone (a PNG or a CSV in the "
             f"current folder)."),
    ])


# ---------------------------------------------------------------------------- assembly


def assemble(bundle: Bundle, rid: str, cmd: Commands, code: dict, date: dt.datetime,
             workers: int = 1) -> tuple[Document, dict]:
    """The document and the machine-readable side files (claims, certificate, provenance,
    BibTeX). With ``workers`` > 1 every figure is rendered on return: those drawn from the
    tables alone in forked processes while the claims are evaluated (:class:`FigureDrawing`),
    the claims' own figures after them."""
    cert = certificate(bundle, rid)
    from_tables = [*task_sections(bundle, cmd), agreement_section(bundle, cert, cmd),
                   theory_section(bundle, cmd), *performance_sections(bundle)]
    early = [i for i in Document("", [], from_tables).items() if isinstance(i, Figure)]
    with FigureDrawing(early if workers > 1 else [], workers) as drawing:
        results = cl.evaluate_claims(bundle)
        drawing.finish()
    prov = provenance(bundle, rid, code, date)
    cff = citation_cff()
    bib = bibtex(rid, bundle.name, code, date, cff)
    sections = [overview_section(results, bundle, cmd), *claims_sections(results, bundle, cmd),
                *from_tables, provenance_section(prov, cmd),
                citation_section(bib, cff), reproduce_section(bundle, cmd, rid)]
    digest = str(bundle.grid_doc.get("digest", ""))[:12]
    meta = [("report id", rid), ("grid", f"{bundle.name} (digest {digest})"),
            ("generated", prov["date"]),
            ("code", f"hrta-bench {code.get('suite_version')}, commit "
                     f"{(code.get('commit') or 'unknown')[:12]}"
                     f"{' (dirty tree)' if code.get('dirty') else ''}"),
            ("results", f"`{bundle.root}`"), ("regenerate", f"`{cmd.report}`")]
    doc = Document(f"HRTA reproducibility report: grid {bundle.name}", meta, sections)
    side = {"claims.json": {"report_id": rid, "alpha": stats.ALPHA,
                            "outcome_rule": stats.OUTCOME_RULE,
                            "combine_rule": stats.COMBINE_RULE,
                            "claims": [c.to_dict() for c in results]},
            "certificate.json": cert, "provenance.json": prov}
    return doc, {**side, "citation.bib": bib}


def item_ids(doc: Document) -> list[str]:
    return [item.id for item in doc.items()]


def write_only(doc: Document, ids: list[str], out: Path) -> list[Path]:
    """Write the named figures (PNG) and tables (CSV) into ``out``; unknown ids are an error
    naming the valid ones."""
    items = {item.id: item for item in doc.items()}
    unknown = [i for i in ids if i not in items]
    if unknown:
        raise ValueError(f"--only: expected figure or table ids ({', '.join(items)}), got "
                         f"{', '.join(unknown)}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in ids:
        item = items[i]
        if isinstance(item, Figure):
            path = out / f"{i}.png"
            atomic.write_bytes(path, item.render())
        else:
            path = out / f"{i}.csv"
            atomic.write_text(path, item.data.to_csv(index=False))
        written.append(path)
    return written


_PENDING: list[Figure] = []
"""The figures the forked workers of the one running :class:`FigureDrawing` draw, by index
(inherited at fork: a figure's ``make`` is a closure over the loaded tables, which cannot be
pickled)."""


def _render_pending(index: int) -> bytes:
    return _PENDING[index].render()


FORK_UNSAFE = ("jax", "tensorflow", "torch")
"""Frameworks whose thread pools make a fork of this process unsafe once imported."""


def can_fork() -> bool:
    """Whether figures may be drawn in forked processes here (see :class:`FigureDrawing`)."""
    return ("fork" in multiprocessing.get_all_start_methods()
            and not any(name in sys.modules for name in FORK_UNSAFE))


class FigureDrawing:
    """Draw ``figures`` (those not rendered yet) in ``workers`` forked processes, one figure
    at a time each, in the background while the caller goes on; :meth:`finish` waits and sets
    each ``Figure.png``. With fewer than 2 workers, no ``fork`` (Windows, macOS' default) or a
    framework with its own threads imported in this process (:data:`FORK_UNSAFE`; the
    pipeline's report job imports none) nothing runs in the background and :meth:`finish`
    draws them serially. Drawing is deterministic, so the PNG bytes are those of a serial
    rendering. One at a time per process; use it as a context manager so that an error stops
    the workers."""

    def __init__(self, figures: list[Figure], workers: int = 1):
        global _PENDING
        self.figures = [f for f in figures if f.png is None]
        self.pool = self.pending = None
        workers = min(int(workers), len(self.figures))
        if workers >= 2 and can_fork():
            _PENDING = self.figures
            self.pool = multiprocessing.get_context("fork").Pool(workers)
            self.pending = self.pool.map_async(_render_pending, range(len(self.figures)),
                                               chunksize=1)

    def finish(self) -> None:
        if self.pool is None:
            for figure in self.figures:
                figure.render()
            self.figures = []
            return
        try:
            pngs = self.pending.get()
        finally:
            self._stop()
        for figure, png in zip(self.figures, pngs, strict=True):
            figure.png = png
        self.figures = []

    def _stop(self) -> None:
        global _PENDING
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        _PENDING = []

    def __enter__(self) -> FigureDrawing:
        return self

    def __exit__(self, *exc) -> None:
        self._stop()


def render_figures(doc: Document, workers: int = 1) -> None:
    """Render every figure of ``doc`` not rendered yet (sets each ``Figure.png``), with
    ``workers`` forked processes (:class:`FigureDrawing`)."""
    with FigureDrawing([i for i in doc.items() if isinstance(i, Figure)], workers) as drawing:
        drawing.finish()


def build_report(results_dir: Path | str, out_root: Path | str = "reports",
                 only: list[str] | None = None, date: dt.datetime | None = None,
                 workers: int = 1) -> Path:
    """Build the report of a results folder into ``<out_root>/<report-id>/`` (replaced whole,
    atomically, when it exists) and return that folder; with ``only``, write just those
    figures / tables into ``out_root`` and return ``out_root``. ``workers``: processes that
    draw the figures (:func:`render_figures`)."""
    bundle = load_bundle(results_dir)
    code = code_version()
    rid = report_id(bundle, code)
    date = date or dt.datetime.now(dt.timezone.utc)
    out_root = Path(out_root)
    cmd = Commands(str(results_dir), str(out_root) if not only else "reports", bundle.name)
    doc, side = assemble(bundle, rid, cmd, code, date, workers=1 if only else workers)
    if only:
        write_only(doc, only, out_root)
        return out_root
    render_figures(doc, workers)
    with atomic.staged_folder(out_root / rid, replace=True) as tmp:
        tmp.chmod(0o755)
        figures = tmp / "figures"
        figures.mkdir()
        for item in doc.items():
            if isinstance(item, Figure):
                (figures / f"{item.id}.png").write_bytes(item.render())
        (tmp / "report.html").write_text(to_html(doc), encoding="utf-8")
        (tmp / "report.md").write_text(to_markdown(doc), encoding="utf-8")
        for name, content in side.items():
            text = content if isinstance(content, str) else json.dumps(
                plain(content), indent=1, sort_keys=True, allow_nan=False)
            (tmp / name).write_text(text + "\n", encoding="utf-8")
    return out_root / rid
