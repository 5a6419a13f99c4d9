"""The performance harness (benchmarks/perf): its pure parts, and one toy end-to-end run."""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))
analysis = importlib.import_module("benchmarks.perf.analysis")
run = importlib.import_module("benchmarks.perf.run")


def test_step_cost_matches_a_hand_count():
    # n = 2, m = 3, d = 1: forward z 2*6+6, h 4*6, f 2*6+2, loss 3*2; backward g 2,
    # da 2*6+3, dz 3*6+3, dW 2*6, db 6 -> 118; P = 3 * 3 = 9 parameters.
    sgd = analysis.step_cost(n=2, m=3, d=1, optimizer="sgd", itemsize=8)
    assert sgd.model_flops == 118
    assert sgd.params == 9
    assert sgd.flops == 118 + 2 * 9
    assert sgd.bytes == 8 * (2 + 2 + 2 * 9)  # X, y, params read + written
    adam = analysis.step_cost(n=2, m=3, d=1, optimizer="adam", itemsize=4)
    assert adam.flops == 118 + 14 * 9
    assert adam.bytes == 4 * (2 + 2 + 2 * 9 + 2 * 2 * 9)  # and m, v read + written
    # d enters the two products and the parameter count
    assert analysis.step_cost(2, 3, 5, "sgd", 8).model_flops == 4 * 2 * 3 * 5 + 13 * 6 + 10 + 6
    with pytest.raises(ValueError, match="optimizer"):
        analysis.step_cost(2, 3, 1, "rmsprop", 8)


def test_limit_is_the_slower_of_arithmetic_and_memory():
    cost = analysis.StepCost(flops=1000, bytes=80, model_flops=900, optimizer_flops=100,
                             params=10)
    assert analysis.limit_seconds(cost, peak_flops=1e3, bandwidth=1e3) == 1.0
    assert analysis.limit_seconds(cost, peak_flops=1e6, bandwidth=10.0) == 8.0


def test_linear_fit_recovers_a_line_and_measures_departures():
    exact = analysis.linear_fit([4, 1, 2, 3], [9, 3, 5, 7])  # y = 1 + 2 x, unsorted
    assert exact.slope == pytest.approx(2.0, rel=1e-12)
    assert exact.intercept == pytest.approx(1.0, abs=1e-12)
    assert exact.r2 == pytest.approx(1.0, abs=1e-12)
    assert exact.max_rel_dev == pytest.approx(0.0, abs=1e-12)
    # y = x^2 on 2..5: by hand the fit is 7x - 11 (3, 10, 17, 24), residuals 1, -1, -1, 1,
    # total sum of squares 249, so R^2 = 1 - 4/249; the largest departure is 1/3 at x = 2
    curved = analysis.linear_fit([2, 3, 4, 5], [4, 9, 16, 25])
    assert curved.slope == pytest.approx(7.0)
    assert curved.intercept == pytest.approx(-11.0)
    assert curved.r2 == pytest.approx(1 - 4 / 249)
    assert curved.max_rel_dev == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        analysis.linear_fit([1], [1])
    with pytest.raises(ValueError):
        analysis.linear_fit([2, 2], [1, 3])


def test_targets_are_met_only_by_finite_values_on_the_right_side():
    assert analysis.Target("peer", 12.0, ">=", 10).met
    assert not analysis.Target("peer", 9.99, ">=", 10).met
    assert analysis.Target("limit", 4.0, "<=", 4).met
    assert not analysis.Target("limit", 4.01, "<=", 4).met
    assert not analysis.Target("pipeline", 30.0, "<", 30).met
    assert not analysis.Target("not measured", None, "<", 30).met
    assert not analysis.Target("nan", math.nan, "<=", 4).met
    assert analysis.Target("x", 1.0, ">=", 10, "why").to_dict() == {
        "name": "x", "value": 1.0, "op": ">=", "threshold": 10, "met": False, "note": "why"}


TOY = ["--backends", "numpy", "--width", "8", "--n", "10", "--steps", "20",
       "--peer-steps", "5", "--large-width", "16", "--large-n", "10", "--large-steps", "5",
       "--large-peer-steps", "2", "--repeats", "1", "--peer-repeats", "1",
       "--matmul-size", "64", "--copy-mb", "2", "--vmap", "numpy", "8", "10", "10", "3",
       "--scaling-widths", "8", "16", "32", "--scaling-ns", "10", "20",
       "--scaling-steps", "10", "20"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "perf"
    result = run.main([*TOY, "--out", str(out)])
    return out, result


def test_toy_run_writes_every_measurement_and_target(toy):
    out, result = toy
    perf = json.loads((out / "perf.json").read_text())
    assert set(perf) >= {"command", "date", "load_before", "load_after", "machine", "rows",
                         "vectorised", "scaling", "pipeline", "targets"}
    assert set(perf["machine"]["peak_flops"]) == {"float64", "float32"}
    # 2 workloads x 4 (optimizer, dtype) configurations, one backend
    assert len(perf["rows"]) == 8
    for row in perf["rows"]:
        assert row["steps_run"] == row["steps"]
        assert row["us_per_step"] > 0 and row["limit_us"] > 0
        assert row["ratio_to_limit"] == pytest.approx(row["us_per_step"] / row["limit_us"])
    assert perf["vectorised"][0]["max_rel_loss_deviation"] < 1e-12  # same formulas, float64
    assert set(perf["scaling"]["series"]) == {"width", "n", "steps"}
    # measured in a child process on one CPU where the OS can pin it (Linux)
    assert perf["scaling"]["cpus"] == (1 if hasattr(os, "sched_setaffinity") else os.cpu_count())
    names = [t["name"] for t in perf["targets"]]
    assert sum(n.startswith("vs eager peer") for n in names) == 4
    assert any("fastest" in n for n in names) and any("linear in" in n for n in names)
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "measurements.csv").read_text().count("\n") == 9


def test_report_shows_the_performance_section_when_the_harness_ran(toy):
    from hrta.report.build import performance_sections

    out, _ = toy
    (section,) = performance_sections(SimpleNamespace(root=out.parent / "default"))
    assert section.id == "performance"
    table = next(b for b in section.blocks if getattr(b, "id", "") == "perf-targets")
    assert len(table.rows) == len(json.loads((out / "perf.json").read_text())["targets"])
    assert performance_sections(SimpleNamespace(root=out.parent / "nowhere" / "x")) == []


def test_why_peer_names_the_backends_that_miss_and_every_eager_time():
    def row(backend, speedup, eager):
        return {"workload": "reference", "backend": backend, "speedup_vs_peer": speedup,
                "peer_us_per_step": eager}

    rows = [row("torch", 5.0, 400.0), row("torch", 4.0, 500.0), row("jax", 60.0, 6000.0),
            row("numpy", None, None)]
    text = run.why_peer(rows)
    assert text.startswith("Why torch is less than 10x ahead")
    assert "torch 400-500, jax 6000-6000" in text and "numpy" not in text
    assert run.why_peer([row("jax", 60.0, 6000.0)]) is None
