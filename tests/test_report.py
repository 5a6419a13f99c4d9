"""The comparison report (hrta.report): the statistics and verdict rules on synthetic data with
known answers, the claims built from synthetic results tables, and a whole report built from a
synthetic results folder (self-contained HTML, Markdown twin, certificate, report id, ``--only``
and the CLI). The browser test of the smoke grid's report is in test_report_browser.py."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from hrta import grid as hgrid
from hrta.cli import main
from hrta.report import claims, stats
from hrta.report.build import build_report, can_fork
from hrta.report.load import Bundle, ReportInputError, load_bundle, report_id
from hrta.report.provenance import code_version

# ---------------------------------------------------------------------------- statistics


def test_holm_matches_the_hand_computed_adjustment():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match=r"pvalues\[1\]"):
        stats.holm([0.1, 1.5])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_never_lowers_a_p_value_and_keeps_their_order(pvalues):
    adjusted = stats.holm(pvalues)
    assert all(p <= a <= 1 for p, a in zip(pvalues, adjusted, strict=True))
    order = np.argsort(pvalues, kind="stable")
    ranked = [adjusted[i] for i in order]
    assert all(a <= b + 1e-15 for a, b in zip(ranked, ranked[1:], strict=False))


def test_paired_test_agrees_with_the_t_formula_and_the_bootstrap_is_reproducible():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, 7)
    x = y - 0.5 + rng.normal(0, 0.2, 7)
    p = stats.paired_test(x, y)
    d = x - y
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    assert p.p_t == pytest.approx(2 * sps.t.sf(abs(t), d.size - 1))
    assert p.mean_diff == pytest.approx(d.mean()) and p.d_z == pytest.approx(d.mean() / d.std(
        ddof=1))
    assert p.ci_low < p.mean_diff < p.ci_high < 0
    assert p.wins + p.losses == 7 and p.n == 7
    assert stats.paired_test(x, y) == p                      # fixed bootstrap seed
    assert p.p_wilcoxon == pytest.approx(sps.wilcoxon(x, y).pvalue)


def test_paired_test_edge_cases():
    assert stats.paired_test([1.0], [2.0]).p_t is None          # one seed: no test
    assert stats.paired_test([], []).n == 0
    same = stats.paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.p_t == 1.0 and same.p_wilcoxon == 1.0 and same.mean_diff == 0
    shift = stats.paired_test([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])  # every seed exactly 1 lower
    assert shift.p_t == 0.0 and shift.d_z is None and shift.wins == 3
    with pytest.raises(ValueError, match="x, y"):
        stats.paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="x: expected finite"):
        stats.paired_test([1.0, math.inf], [1.0, 2.0])


def test_bootstrap_interval_covers_the_mean_and_needs_two_values():
    d = np.array([0.1, -0.3, 0.2, 0.5, -0.1])
    lo, hi = stats.bootstrap_mean_ci(d)
    assert lo < d.mean() < hi and lo >= d.min() and hi <= d.max()
    assert stats.bootstrap_mean_ci([1.0]) is None


@pytest.mark.parametrize(("p", "diff", "expected"), [
    (0.01, -0.3, stats.FOR), (0.01, 0.3, stats.AGAINST), (0.2, -0.3, stats.NEITHER),
    (0.05, -0.3, stats.NEITHER), (None, -0.3, stats.NO_DATA), (0.01, 0.0, stats.NEITHER)])
def test_outcome_rule(p, diff, expected):
    assert stats.outcome(p, diff) == expected


F, A, N, X = stats.FOR, stats.AGAINST, stats.NEITHER, stats.NO_DATA


@pytest.mark.parametrize(("outcomes", "verdict"), [
    ([F, F, F], stats.REPRODUCED),
    ([F, F, N], stats.REPRODUCED),          # a majority for, none against
    ([F, N, N], stats.INCONCLUSIVE),        # a minority for
    ([F, N], stats.INCONCLUSIVE),           # half is not a majority
    ([F, F, A], stats.INCONCLUSIVE),        # mixed, more for than against
    ([F, A], stats.NOT_REPRODUCED),         # as many against as for
    ([A, N, N], stats.NOT_REPRODUCED),
    ([N, N], stats.INCONCLUSIVE),
    ([X, X], stats.INCONCLUSIVE),           # no data at all
    ([F, F, X, X, X], stats.REPRODUCED),    # tests without data do not count
    ([], stats.INCONCLUSIVE),
    ([stats.REPRODUCED, stats.INCONCLUSIVE, stats.REPRODUCED], stats.REPRODUCED),
    ([stats.NOT_REPRODUCED, stats.REPRODUCED], stats.NOT_REPRODUCED)])
def test_combine_rule(outcomes, verdict):
    assert stats.combine(outcomes) == verdict


def test_combine_rejects_unknown_outcomes():
    with pytest.raises(ValueError, match="outcome"):
        stats.combine(["maybe"])


def test_quantiles_and_summaries_handle_unreached_thresholds():
    assert stats.quantiles_inf([10, 20, math.inf], [0.5])[0] == 20
    assert math.isinf(stats.quantiles_inf([10, math.inf, math.inf], [0.5])[0])
    assert stats.median_iqr([1.0, 2.0, 3.0, math.nan]) == (1.5, 2.0, 2.5)
    gm, lo, hi = stats.geometric_mean_ci([1e-2, 1e-4])
    assert gm == pytest.approx(1e-3) and lo < gm < hi
    assert stats.geometric_mean_ci([0.5])[1:] == (None, None)


# ---------------------------------------------------------------------------- synthetic results

TASKS = ("sin1d", "franke2d")
GRID = {
    "description": "synthetic results for the report's tests",
    "tasks": list(TASKS), "n_train": 8, "n_test": 10, "width": 4, "steps": 40, "log_every": 10,
    "thresholds": [0.1, 1e-3], "methods": ["relu", "homotopy", "relaxation"],
    "optimizers": {"gd": {"name": "sgd"}, "adam": {"name": "adam"}},
    "schedules": {"constant": {"name": "constant"}, "cosine": {"name": "cosine"}},
    "baseline_schedules": ["constant", "cosine"],
    "tuning": {"backend": "numpy", "seeds": [10, 11],
               "lr_range": {"gd": [0.01, 1.0], "adam": [0.001, 0.1]}},
    "evaluation": {"backend": "numpy", "seeds": [0, 1, 2, 3, 4]},
}


def synthetic(effects: dict[str, float], noise: float = 0.05, seed: int = 0,
              agreement_fail: bool = False) -> dict:
    """Results tables of a fake grid whose HRTA methods' final log10 loss is ReLU's plus
    ``effects[method]`` (per seed, plus N(0, noise) noise); one extra jax seed-0 run per cell.
    Returns {"grid_doc", "results", "histories", "selection", "agreement", "summary"}."""
    grid = hgrid.parse_grid(GRID, "synthetic")
    doc = grid.resolved()
    rng = np.random.default_rng(seed)
    rows, hist, sel = [], [], []
    base: dict[tuple, float] = {}      # ReLU-level log10 loss per (task, optimizer, LR, seed)
    budget = grid["steps"]
    for case in hgrid.cases(grid):
        family = grid.methods[case.method].family
        lr = grid.lr_grid(case.optimizer_label)[2]
        score = 10 ** (-2 + effects.get(case.method, 0.0))
        for i, cand in enumerate(grid.lr_grid(case.optimizer_label)):
            sel.append({"task": case.task, "method": case.method,
                        "optimizer_label": case.optimizer_label, "schedule": case.schedule,
                        "family": family, "lr": cand, "lr_index": i,
                        "score": score * (1 + abs(i - 2)), "chosen": i == 2,
                        "chosen_at_grid_edge": False, "all_diverged": False,
                        "lr_grid": json.dumps(grid.lr_grid(case.optimizer_label)),
                        "rule": "median_final_train_loss", "rule_text": "lowest median"})
        runs = [("numpy", "float64", sd) for sd in range(5)] + [("jax", "float64", 0)]
        for backend, dtype, sd in runs:
            key = (case.task, case.optimizer_label, case.schedule, sd)
            log_loss = base.setdefault(key, rng.normal(-2.0, 0.3)) \
                + effects.get(case.method, 0.0) + rng.normal(0, noise)
            final = 10 ** log_loss
            run_id = f"{case.task}-{case.method}-{case.optimizer_label}-{case.schedule}-" \
                     f"seed{sd}-{backend}"
            steps = np.arange(0, budget + 1, grid["log_every"])
            curve = final ** (steps / budget)          # from loss 1 at step 0 to the final
            reach = {t: next((int(k) for k, v in zip(steps, curve, strict=True) if v <= t),
                             None) for t in (0.1, 1e-3)}
            rows.append({
                "run_id": run_id, "grid": "synthetic", "phase": "eval", "backend": backend,
                "task": case.task, "method": case.method, "family": family,
                "optimizer": grid["optimizers"][case.optimizer_label]["name"],
                "optimizer_label": case.optimizer_label, "schedule": case.schedule, "lr": lr,
                "lr_index": None, "width": 4, "n_train": 8, "seed": sd, "dtype": dtype,
                "batch_size": None, "steps": budget, "studies": "main", "train_loss": final,
                "initial_train_loss": 1.0, "test_mse": final * 3, "test_rel_l2": 0.1,
                "diverged": False, "diverged_step": None, "steps_run": budget,
                "compile_seconds": 0.1, "train_seconds": 0.4, "wall_seconds": 0.6,
                "us_per_step": 1e4, "spec_digest": f"digest-{run_id}", "suite_version": "0.1.0",
                "spec_version": 1, "device": "cpu",
                "steps_to_1e-01": reach[0.1], "seconds_to_1e-01":
                    None if reach[0.1] is None else reach[0.1] * 0.01,
                "steps_to_1e-03": reach[1e-3], "seconds_to_1e-03":
                    None if reach[1e-3] is None else reach[1e-3] * 0.01,
                "git_commit": "0" * 40, "git_dirty": False,
                "versions": json.dumps({"numpy": "2.0"} if backend == "numpy"
                                       else {"jax": "0.10", "numpy": "2.0"}),
                "cpu": "Synthetic CPU", "run_dir": f"runs/{run_id}"})
            hist.append(pd.DataFrame({"run_id": run_id, "step": steps, "s": 1.0, "lr": lr,
                                      "train_loss": curve}))
    results = pd.DataFrame(rows)
    for col in ("lr_index", "diverged_step", "batch_size", "steps_to_1e-01", "steps_to_1e-03"):
        results[col] = results[col].astype("Int64")
    jax = results[results["backend"] == "jax"]
    agreement = pd.DataFrame({
        "run_id": jax["run_id"], "reference_run_id": jax["run_id"].str.replace("jax", "numpy"),
        "backend": "jax", "dtype": "float64", "task": jax["task"], "method": jax["method"],
        "max_rel_loss": 1e-15, "max_abs_loss": 1e-17, "max_rel_params": 2e-16,
        "first_exceed_step": pd.array([None] * len(jax), dtype="Int64"), "loss_rtol": 1e-9,
        "loss_atol": 0.0, "params_rtol": 1e-9, "tolerance": "floor 1e-9", "passed": True,
        "problem": ""}).reset_index(drop=True)
    if agreement_fail:
        agreement.loc[0, ["max_rel_loss", "passed", "first_exceed_step", "problem"]] = \
            [3e-3, False, 20, "train_loss at step 20 off by 3e-3"]
    summary = {"reference_backend": "numpy", "rule": "every logged step within tolerance",
               "compared": len(agreement), "passed": int(agreement["passed"].sum()),
               "failed": int((~agreement["passed"]).sum()),
               "all_passed": bool(agreement["passed"].all()), "not_compared": []}
    return {"grid_doc": doc, "results": results, "histories": pd.concat(hist),
            "selection": pd.DataFrame(sel), "agreement": agreement, "summary": summary}


def as_bundle(tables: dict) -> Bundle:
    results = tables["results"].copy()
    return Bundle(root=Path("synthetic"), grid_doc=tables["grid_doc"], results=results,
                  histories=tables["histories"], selection=tables["selection"],
                  agreement=tables["agreement"], agreement_summary=tables["summary"],
                  spectrum=None, ntk_width=None, rates=None, theory_checks=None, skipped=None)


def write_results(tables: dict, root: Path) -> Path:
    out = root / "results" / "synthetic"
    (out / "plan").mkdir(parents=True)
    (out / "plan" / "grid.json").write_text(json.dumps(tables["grid_doc"]))
    for name in ("results", "histories", "selection", "agreement"):
        tables[name].to_parquet(out / f"{name}.parquet", index=False)
    (out / "agreement.json").write_text(json.dumps(tables["summary"]))
    (out / "skipped.json").write_text(json.dumps(
        {"missing_backends": {"tensorflow": "tensorflow is not installed"}, "skipped_runs": []}))
    return out


def _verdict(result: claims.ClaimResult, backend: str = "numpy") -> claims.Verdict:
    return next(v for v in result.verdicts if v.backend == backend)


def test_claim_methods_follow_the_stage_definitions():
    doc = hgrid.parse_grid({**GRID, "methods": list(hgrid.METHODS)}, "g").resolved()
    assert claims.homotopy_methods(doc) == ["homotopy", "linear_ramp", "four_stage"]
    assert claims.relaxation_methods(doc) == ["relaxation", "relaxation_past_relu"]
    assert claims.relu_methods(doc) == ["relu"]


def test_a_clear_speed_up_is_reproduced():
    bundle = as_bundle(synthetic({"homotopy": -1.0, "relaxation": -1.0}))
    a, b, c = (f(bundle, claims.eval_groups(bundle)) for f in (
        lambda bd, g: claims.claim_ab(bd, g, "a"), lambda bd, g: claims.claim_ab(bd, g, "b"),
        claims.claim_c))
    for result in (a, b, c):
        v = _verdict(result)
        assert v.verdict == stats.REPRODUCED, (result.key, v)
        assert v.counts["for"] == v.counts["tests"] and v.counts["seeds"] == 5
    numpy_tests = [t for t in a.tests if t.backend == "numpy"]
    assert len(numpy_tests) == 2 * 2            # tasks x optimizers at the shared schedule
    for t in numpy_tests:
        assert t.hrta[1:] == t.other[1:] and t.other[0] == "relu"
        assert t.paired.mean_diff == pytest.approx(-1.0, abs=0.15)
        assert 10 ** t.paired.ci_high < 1 and t.outcome == stats.FOR
    # Holm's correction is across tasks, within one comparison
    family = [t for t in numpy_tests if (t.hrta, t.other) == (numpy_tests[0].hrta,
                                                               numpy_tests[0].other)]
    assert len(family) == len(TASKS)
    assert [t.p_holm for t in family] == stats.holm([t.paired.p_t for t in family])
    # the jax runs have one seed each: no test, so no verdict either way
    jax = _verdict(a, "jax")
    assert jax.verdict == stats.INCONCLUSIVE and jax.counts["no_data"] == jax.counts["tests"]
    assert "1 seed" in jax.note


def test_a_clear_slow_down_is_not_reproduced():
    bundle = as_bundle(synthetic({"homotopy": +0.8, "relaxation": +0.8}))
    groups = claims.eval_groups(bundle)
    for result in (claims.claim_ab(bundle, groups, "a"), claims.claim_ab(bundle, groups, "b")):
        v = _verdict(result)
        assert v.verdict == stats.NOT_REPRODUCED
        assert v.counts["against"] == v.counts["tests"] == 4


def test_no_effect_is_inconclusive():
    bundle = as_bundle(synthetic({"homotopy": 0.0, "relaxation": 0.0}, noise=0.3, seed=3))
    groups = claims.eval_groups(bundle)
    result = claims.claim_ab(bundle, groups, "a")
    v = _verdict(result)
    assert v.verdict == stats.INCONCLUSIVE
    assert v.counts["for"] == v.counts["against"] == 0


def test_mixed_effects_follow_the_combination_rule():
    # homotopy much faster, relaxation much slower: claim (a) reproduced, (b) not reproduced
    bundle = as_bundle(synthetic({"homotopy": -1.0, "relaxation": +1.0}))
    groups = claims.eval_groups(bundle)
    assert _verdict(claims.claim_ab(bundle, groups, "a")).verdict == stats.REPRODUCED
    assert _verdict(claims.claim_ab(bundle, groups, "b")).verdict == stats.NOT_REPRODUCED
    # claim (c) compares the best-tuned cells: the homotopy cells score best on tuning
    c = claims.claim_c(bundle, groups)
    assert {t.hrta[0] for t in c.tests} == {"homotopy"}
    assert _verdict(c).verdict == stats.REPRODUCED


def test_diverged_runs_score_their_initial_loss():
    frame = pd.DataFrame({"train_loss": [1e-3, np.nan, np.inf, 0.0],
                          "initial_train_loss": [2.0, 2.0, 4.0, 1.0],
                          "diverged": [False, True, False, False]})
    got = claims.final_log_loss(frame).to_numpy()
    assert got[:3] == pytest.approx([-3.0, math.log10(2.0), math.log10(4.0)])
    assert got[3] == pytest.approx(math.log10(claims.LOSS_FLOOR))


def test_theory_claims_combine_the_per_task_checks():
    bundle = as_bundle(synthetic({}))
    bundle.theory_checks = {
        "s_squared": {"sin1d": {"verdict": "reproduced", "rule": "r", "slope": 2.0},
                      "franke2d": {"verdict": "reproduced", "rule": "r", "slope": 1.99}},
        "width": {"numpy": {"checks": {"sin1d": {"verdict": "reproduced", "rule": "w"},
                                       "franke2d": {"verdict": "not reproduced"}},
                            "skipped": None},
                  "torch": {"checks": {}, "skipped": "torch is not installed"}}}
    d = claims.claim_d(bundle)
    assert d.verdicts[0].verdict == stats.REPRODUCED and len(d.details) == 2
    e = claims.claim_e(bundle)
    assert _verdict(e).verdict == stats.NOT_REPRODUCED
    torch = _verdict(e, "torch")
    assert torch.verdict == stats.INCONCLUSIVE and "not installed" in torch.note


# ---------------------------------------------------------------------------- the whole report
# (marked slow: building the report's figures takes about 10 s of CPU)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A report of synthetic results (homotopy clearly faster, relaxation no different,
    one failed agreement run); built once for the tests below."""
    root = tmp_path_factory.mktemp("report")
    tables = synthetic({"homotopy": -1.0}, agreement_fail=True)
    results = write_results(tables, root)
    folder = build_report(results, root / "reports")
    return {"root": root, "results": results, "folder": folder, "tables": tables}


@pytest.mark.slow
def test_report_is_one_self_contained_html_file_and_a_markdown_twin(built):
    folder = built["folder"]
    assert re.fullmatch(r"synthetic-[0-9a-f]{12}", folder.name)
    page = (folder / "report.html").read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == page.count("<img ") >= 5
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    md = (folder / "report.md").read_text()
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", md)
    assert len(linked) == len(images)
    assert all((folder / p).is_file() for p in linked)
    for name in ("certificate.json", "claims.json", "provenance.json", "citation.bib"):
        assert (folder / name).is_file(), name
    for text in (page, md):
        assert "Regenerate: " in text and "hrta report" in text
        assert f"@misc{{hrtabench:{folder.name}," in text
        assert "CITATION.cff" in text


def _in_fresh_process(code: str) -> None:
    """Run ``code`` in a new interpreter: this test process may have imported a framework,
    which turns forked figure drawing off (hrta.report.build.FORK_UNSAFE)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_figures_drawn_in_parallel_are_those_drawn_serially(built, tmp_path):
    _in_fresh_process(
        "from hrta.report.build import build_report, can_fork\n"
        "assert can_fork()\n"
        f"build_report({str(built['results'])!r}, {str(tmp_path / 'reports')!r}, workers=2)\n")
    folder = tmp_path / "reports" / built["folder"].name
    serial = sorted((built["folder"] / "figures").iterdir())
    parallel = sorted((folder / "figures").iterdir())
    assert len(serial) >= 5 and [p.name for p in parallel] == [p.name for p in serial]
    for one, other in zip(serial, parallel, strict=True):
        assert one.read_bytes() == other.read_bytes(), one.name


RENDER_CHECK = """
import pytest
from matplotlib.figure import Figure as MplFigure
from hrta.report.build import can_fork, render_figures
from hrta.report.document import Document, Figure, Section

def tiny(value):
    fig = MplFigure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, value])
    return fig

def broken():
    raise ValueError("figure data: expected a column 'loss'")

assert can_fork()
figures = [Figure(f"f{i}", "t", "c", make=lambda i=i: tiny(i)) for i in range(3)]
render_figures(Document("d", [], [Section("s", "S", list(figures))]), workers=2)
assert all(f.png.startswith(b"\\x89PNG") for f in figures) and len({f.png for f in figures}) == 3
doc = Document("d", [], [Section("s", "S", [Figure("ok", "t", "c", make=lambda: tiny(1.0)),
                                             Figure("bad", "t", "c", make=broken)])])
with pytest.raises(ValueError, match="expected a column 'loss'"):
    render_figures(doc, workers=2)
"""


def test_render_figures_fills_every_figure_and_a_worker_error_reaches_the_caller():
    _in_fresh_process(RENDER_CHECK)


def test_no_forked_drawing_once_a_framework_is_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", object())
    assert not can_fork()


@pytest.mark.slow
def test_report_states_the_verdicts_and_numbers_of_the_tables(built):
    folder, tables = built["folder"], built["tables"]
    verdicts = json.loads((folder / "claims.json").read_text())
    by_claim = {c["claim"]: c for c in verdicts["claims"]}
    assert by_claim["a"]["verdicts"][0]["verdict"] == "reproduced"
    assert by_claim["a"]["verdicts"][0]["backend"] == "numpy"
    assert by_claim["b"]["verdicts"][0]["verdict"] == "inconclusive"
    assert verdicts["combine_rule"] == stats.COMBINE_RULE
    # a number of the results table, through the same formatting, is in the report
    page = (folder / "report.html").read_text()
    chosen = tables["selection"][tables["selection"]["chosen"]]["lr"].iloc[0]
    assert f"{chosen:.3g}" in page
    test = by_claim["a"]["tests"][0]
    res = tables["results"]
    rows = res[(res["task"] == test["task"]) & (res["backend"] == "numpy")
               & (res["optimizer_label"] == test["hrta"]["optimizer_label"])
               & (res["schedule"] == test["hrta"]["schedule"])]
    h = np.log10(rows[rows["method"] == "homotopy"].sort_values("seed")["train_loss"])
    r = np.log10(rows[rows["method"] == "relu"].sort_values("seed")["train_loss"])
    assert test["mean_diff"] == pytest.approx(float(np.mean(h.to_numpy() - r.to_numpy())))


@pytest.mark.slow
def test_certificate_lists_each_backend_dtype_and_the_failure(built):
    cert = json.loads((built["folder"] / "certificate.json").read_text())
    assert cert["report_id"] == built["folder"].name
    assert cert["compared"] == len(built["tables"]["agreement"]) and cert["failed"] == 1
    (row,) = cert["by_backend_dtype"]
    assert (row["backend"], row["dtype"], row["first_exceed_step"]) == ("jax", "float64", 20)
    assert row["max_rel_loss"] == pytest.approx(3e-3) and row["loss_rtol_max"] == 1e-9
    assert cert["failures"][0]["problem"].startswith("train_loss at step 20")
    assert cert["backends_not_run"] == [{"backend": "tensorflow",
                                         "reason": "tensorflow is not installed"}]
    page = (built["folder"] / "report.html").read_text()
    assert "FAILED" in page and "tensorflow is not installed" in page


@pytest.mark.slow
def test_report_id_depends_on_the_tables_only_through_their_content(built, tmp_path):
    code = code_version()
    assert report_id(load_bundle(built["results"]), code) == built["folder"].name
    copy = write_results(built["tables"], tmp_path / "a")            # same content elsewhere
    assert report_id(load_bundle(copy), code) == built["folder"].name
    changed = write_results(synthetic({"homotopy": -1.0}, seed=1, agreement_fail=True),
                            tmp_path / "b")
    assert report_id(load_bundle(changed), code) != built["folder"].name
    assert report_id(load_bundle(copy), {**code, "commit": "f" * 40}) != built["folder"].name
    perf = copy.parent / "perf"                     # the report shows perf.json when present
    perf.mkdir()
    (perf / "perf.json").write_text("{}")
    with_perf = report_id(load_bundle(copy), code)
    assert with_perf != built["folder"].name
    (perf / "perf.json").write_text('{"targets": []}')
    assert report_id(load_bundle(copy), code) != with_perf


@pytest.mark.slow
def test_only_regenerates_single_figures_and_tables(built, tmp_path):
    out = tmp_path / "only"
    status = main(["report", str(built["results"]), "--only", "claims-overview",
                   "task-sin1d-loss", "--out", str(out)])
    assert status == 0
    table = pd.read_csv(out / "claims-overview.csv")
    assert list(table["claim"]) == ["a", "b", "c", "d", "e"]
    assert (out / "task-sin1d-loss.png").read_bytes()[:4] == b"\x89PNG"
    page = (built["folder"] / "report.html").read_text()
    assert "--only claims-overview" in page and "--only task-sin1d-loss" in page


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hrta: error: RESULTS_DIR: expected") and "\n" not in err
    empty = tmp_path / "results" / "x"
    empty.mkdir(parents=True)
    assert main(["report", str(empty)]) == 2
    assert "plan/grid.json: expected this file" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_columns_are_named(built, tmp_path):
    tables = dict(built["tables"])
    tables["results"] = tables["results"].drop(columns=["test_mse"])
    out = write_results(tables, tmp_path)
    with pytest.raises(ReportInputError, match="results.parquet: expected columns test_mse"):
        load_bundle(out)
