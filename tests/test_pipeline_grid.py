"""The pipeline's library: grid validation and expansion (hrta.grid), the fair-tuning rule
(hrta.tuning), batches that resume (hrta.batch) and the tidy tables (hrta.aggregate)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from hrta import grid as hgrid
from hrta import tuning
from hrta.aggregate import build_tables, steps_to, threshold_name
from hrta.batch import run_batch, run_plan_batch
from hrta.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]
GRIDS = sorted((ROOT / "benchmarks").glob("*.yaml"))

TINY = {
    "description": "tiny grid for unit tests",
    "tasks": ["sin1d"],
    "n_train": 8, "n_test": 10, "width": 4, "steps": 8, "log_every": 2,
    "thresholds": [0.5, 1e-3],
    "methods": ["relu", "homotopy"],
    "optimizers": {"gd": {"name": "sgd"}, "adam": {"name": "adam"}},
    "schedules": {"constant": {"name": "constant"}, "cosine": {"name": "cosine"}},
    "baseline_schedules": ["constant", "cosine"],
    "tuning": {"backend": "numpy", "seeds": [10, 11],
               "lr_range": {"gd": [0.01, 1.0], "adam": [0.001, 0.1]}},
    "evaluation": {"backend": "numpy", "seeds": [0, 1]},
}


def _tiny(**changes) -> dict:
    doc = copy.deepcopy(TINY)
    doc.update(changes)
    return doc


# ---------------------------------------------------------------------------- grids


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_every_benchmark_grid_is_valid(path):
    grid = hgrid.load_grid(path)
    assert grid.name == path.stem
    assert hgrid.tune_runs(grid), "a grid without tuning runs"
    runs = hgrid.eval_runs(grid)
    assert len({(r.backend, r.run_id) for r in runs}) == len(runs)


def test_defaults_are_filled_in():
    grid = hgrid.parse_grid(_tiny())
    assert grid["n_train"] == 8 and grid["train"] == ["W", "b", "a"]
    assert grid["tuning"]["lr_count"] == 5
    assert grid["tuning"]["rule"] == "median_final_train_loss"
    assert grid["hrta_schedules"] == ["constant"]


@pytest.mark.parametrize(("change", "path"), [
    ({"tunning": {}}, "grid.tunning"),
    ({"width": "wide"}, "grid.width"),
    ({"steps": 2}, "grid.steps"),
    ({"tasks": ["sin3d"]}, "grid.tasks[0]"),
    ({"methods": ["relu", "magic"]}, "grid.methods[1]"),
    ({"optimizers": {"gd": {"name": "lbfgs"}}}, "grid.optimizers.gd.name"),
    ({"tuning": {"backend": "numpy", "seeds": [0], "lr_count": 3,
                 "lr_range": {"gd": [0.1, 1], "adam": [0.1, 1]}}}, "grid.tuning.lr_count"),
    ({"tuning": {"backend": "numpy", "seeds": [0], "lr_range": {"gd": [0.1, 1]}}},
     "grid.tuning.lr_range.adam"),
    ({"tuning": {"backend": "numpy", "seeds": [0],
                 "lr_range": {"gd": [1, 0.1], "adam": [0.1, 1]}}}, "grid.tuning.lr_range.gd"),
    ({"evaluation": {"backend": "numpy", "seeds": [10]}}, "grid.tuning.seeds"),
    ({"evaluation": {"backend": "cobol", "seeds": [0]}}, "grid.evaluation.backend"),
    ({"hrta_schedules": ["warmup"]}, "grid.hrta_schedules[0]"),
    ({"schedules": {"constant": {"name": "step"}}}, "grid.schedules.constant.step_fraction"),
])
def test_bad_grids_get_one_line_naming_the_field(change, path):
    with pytest.raises(SpecError) as info:
        hgrid.parse_grid(_tiny(**change))
    message = str(info.value)
    assert message.startswith(path + ":"), message
    assert "\n" not in message


def test_grid_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_bytes(b"tasks: [sin1d\n")
    with pytest.raises(SpecError, match="broken.yaml: expected valid YAML"):
        hgrid.load_grid(bad)


@pytest.mark.parametrize(("method", "steps", "expected"), [
    ("relu", 10, [{"s": 1.0, "steps": 10}]),
    ("homotopy", 9, [{"s": 0.5, "steps": 4}, {"s": 1.0, "steps": 5}]),
    ("relaxation", 10, [{"s": 1.5, "steps": 5}, {"s": 1.0, "steps": 5}]),
    ("relaxation_past_relu", 10, [{"s": 1.0, "steps": 5}, {"s": 1.5, "steps": 5}]),
    ("linear_ramp", 10, [{"s_from": 0.0, "s_to": 1.0, "steps": 5}, {"s": 1.0, "steps": 5}]),
    ("four_stage", 10, [{"s": 0.25, "steps": 2}, {"s": 0.5, "steps": 2}, {"s": 0.75, "steps": 2},
                        {"s": 1.0, "steps": 4}]),
])
def test_methods_spend_exactly_the_step_budget(method, steps, expected):
    stages = hgrid.METHODS[method].homotopy(steps)
    assert stages == expected
    assert sum(stage["steps"] for stage in stages) == steps


def test_custom_method_fractions_must_sum_to_one():
    custom = {"half": {"family": "hrta", "stages": [{"fraction": 0.5, "s": 0.5},
                                                     {"fraction": 0.4, "s": 1.0}]}}
    with pytest.raises(SpecError, match="custom_methods.half.stages: expected fractions"):
        hgrid.parse_grid(_tiny(custom_methods=custom, methods=["relu", "half"]))


def test_tuning_gives_every_cell_the_same_log_spaced_budget():
    grid = hgrid.parse_grid(_tiny())
    runs = hgrid.tune_runs(grid)
    cells = hgrid.cases(grid)
    # relu: 2 optimizers x 2 schedules; homotopy: 2 optimizers x 1 schedule
    assert len(cells) == 6
    assert len(runs) == len(cells) * 5 * 2
    for label in ("gd", "adam"):
        lrs = grid.lr_grid(label)
        ratios = np.array(lrs[1:]) / np.array(lrs[:-1])
        assert np.allclose(ratios, ratios[0]) and lrs[0] == grid["tuning"]["lr_range"][label][0]
        per_cell = {}
        for run in runs:
            if run.labels["optimizer_label"] == label:
                key = (run.labels["method"], run.labels["schedule"])
                per_cell.setdefault(key, set()).add(run.labels["lr"])
        assert all(sorted(v) == lrs for v in per_cell.values())
    assert {r.spec.total_steps for r in runs} == {8}
    assert {r.spec.seed for r in runs} == {10, 11}


def test_eval_runs_merge_studies_and_add_references():
    doc = _tiny(width_sweep={"widths": [4, 8], "methods": ["relu"], "optimizers": ["gd"]},
                agreement={"backends": ["numpy", "jax"], "dtypes": ["float64", "float32"],
                           "optimizers": ["gd"]})
    grid = hgrid.parse_grid(doc)
    runs = hgrid.eval_runs(grid)
    by_key = {(r.backend, r.labels["method"], r.labels["optimizer_label"], r.labels["schedule"],
               r.labels["width"], r.labels["seed"], r.labels["dtype"]): r for r in runs}
    main = by_key[("numpy", "relu", "gd", "constant", 4, 0, "float64")]
    assert set(main.studies) == {"main", "width", "agreement", "reference"}
    assert by_key[("numpy", "relu", "gd", "constant", 8, 1, "float64")].studies == ("width",)
    jax32 = by_key[("jax", "homotopy", "gd", "constant", 4, 0, "float32")]
    ref32 = by_key[("numpy", "homotopy", "gd", "constant", 4, 0, "float32")]
    assert jax32.spec.digest() == ref32.spec.digest()
    assert "reference" in ref32.studies
    assert not any(r.backend == "jax" and r.labels["optimizer_label"] == "adam" for r in runs)


def test_selection_sets_eval_learning_rates():
    grid = hgrid.parse_grid(_tiny())
    chosen = {case: 0.123 for case in hgrid.cases(grid)}
    runs = hgrid.eval_runs(grid, chosen)
    assert {r.spec.optimizer.lr for r in runs} == {0.123}
    del chosen[hgrid.cases(grid)[0]]
    with pytest.raises(KeyError, match="no selected learning rate"):
        hgrid.eval_runs(grid, chosen)


def test_batches_cover_every_run_once_and_do_not_depend_on_learning_rates():
    grid = hgrid.parse_grid(_tiny())
    runs = hgrid.tune_runs(grid)
    batches = hgrid.assign_batches(runs, 7)
    flat = [r.run_id for b in batches[("tune", "numpy")] for r in b]
    assert sorted(flat) == sorted(r.run_id for r in runs)
    assert len(batches[("tune", "numpy")]) == math.ceil(len(runs) / 7)
    placeholder = hgrid.assign_batches(hgrid.eval_runs(grid), 3)
    chosen = hgrid.assign_batches(hgrid.eval_runs(grid, {c: 0.5 for c in hgrid.cases(grid)}), 3)
    assert [len(b) for b in placeholder[("eval", "numpy")]] == \
        [len(b) for b in chosen[("eval", "numpy")]]


# ---------------------------------------------------------------------------- tuning rule


def _rows(scores: dict[float, list[float | None]]) -> list[dict]:
    rows = []
    for i, (lr, losses) in enumerate(sorted(scores.items())):
        for seed, loss in enumerate(losses):
            rows.append({"task": "t", "method": "m", "family": "hrta", "optimizer_label": "gd",
                         "schedule": "constant", "lr": lr, "lr_index": i, "seed": seed,
                         "train_loss": loss, "diverged": loss is None})
    return rows


def test_lowest_median_wins_and_diverged_candidates_rank_last():
    scores = {0.1: [0.5, 0.4, 0.6], 0.2: [0.3, 0.2, 0.25], 0.4: [1e-9, None, 1e-9]}
    rows = tuning.select(_rows(scores), "median_final_train_loss", {"gd": [0.1, 0.2, 0.4]},
                         [0, 1, 2])
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["lr"] == 0.2
    assert chosen[0]["score"] == pytest.approx(0.25)
    ranks = {r["lr"]: r["rank"] for r in rows}
    assert ranks == {0.2: 1, 0.1: 2, 0.4: 3}
    assert all(r["selected_lr"] == 0.2 and r["lr_grid"] == json.dumps([0.1, 0.2, 0.4])
               for r in rows)


def test_ties_go_to_the_smaller_learning_rate_and_log_rule_differs():
    scores = {0.1: [1.0, 1.0], 0.2: [1.0, 1.0], 0.3: [1e-6, 10.0]}
    median = tuning.select(_rows(scores), "median_final_train_loss", {"gd": [0.1, 0.2, 0.3]},
                           [0, 1])
    assert next(r["lr"] for r in median if r["chosen"]) == 0.1
    logs = tuning.select(_rows(scores), "mean_log_final_train_loss", {"gd": [0.1, 0.2, 0.3]},
                         [0, 1])
    assert next(r["lr"] for r in logs if r["chosen"]) == 0.3


def test_missing_tuning_runs_are_an_error():
    rows = _rows({0.1: [1.0, 1.0], 0.2: [1.0]})
    with pytest.raises(tuning.TuningError, match="missing seeds"):
        tuning.select(rows, "median_final_train_loss", {"gd": [0.1, 0.2]}, [0, 1])
    with pytest.raises(tuning.TuningError, match="missing learning rates"):
        tuning.select(rows, "median_final_train_loss", {"gd": [0.1, 0.2, 0.3]}, [0])


# ---------------------------------------------------------------------------- batches, tables


def test_steps_to_threshold_is_the_first_logged_step_at_or_below():
    steps = np.array([0, 2, 4, 6])
    losses = np.array([1.0, 0.5, np.nan, 0.1])
    assert steps_to(steps, losses, 0.5) == 2
    assert steps_to(steps, losses, 0.2) == 6
    assert steps_to(steps, losses, 0.01) is None
    assert threshold_name(0.01) == "1e-02"


def test_batch_resumes_and_tables_hold_every_run(tmp_path):
    grid = hgrid.parse_grid(_tiny(methods=["homotopy"], tasks=["sin1d"]), "tiny")
    runs = hgrid.tune_runs(grid)[:6]
    plan = hgrid.plan_document(grid, runs, runs_per_job=100)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    root = tmp_path / "runs"
    first = run_plan_batch(plan_path, "tune", "numpy", 0, root, tmp_path / "m0.json",
                           log=lambda line: None)
    assert (first["trained"], first["reused"]) == (6, 0)
    # a lost run folder and a stale staging folder: only that run is trained again
    victim = root / "tune" / "numpy" / runs[2].run_id
    for path in victim.iterdir():
        path.unlink()
    victim.rmdir()
    (victim.parent / f".{victim.name}.abc.partial").mkdir()
    again = run_plan_batch(plan_path, "tune", "numpy", 0, root, tmp_path / "m1.json",
                           log=lambda line: None)
    assert (again["trained"], again["reused"]) == (1, 5)
    assert not list(victim.parent.glob(".*.partial"))
    results, histories, skipped = build_tables([plan_path], [tmp_path / "m1.json"], "tiny",
                                               grid.thresholds)
    assert sorted(results["run_id"]) == sorted(r.run_id for r in runs)
    assert not skipped
    assert set(histories["run_id"]) == set(results["run_id"])
    assert (histories.groupby("run_id").size() == 5).all()  # steps 0, 2, 4, 6, 8
    for column in ("steps_to_5e-01", "seconds_to_5e-01", "steps_to_1e-03", "versions",
                   "spec_digest", "git_commit", "us_per_step", "family", "optimizer_label"):
        assert column in results.columns
    assert (results["phase"] == "tune").all() and (results["family"] == "hrta").all()


def test_batch_rejects_mixed_backends_and_skips_missing_ones(tmp_path, monkeypatch):
    import hrta.backends
    from hrta.backends.base import BackendUnavailable

    grid = hgrid.parse_grid(_tiny(), "tiny")
    runs = hgrid.tune_runs(grid)[:2]
    other = hgrid.Run(runs[1].run_id + "x", "tune", "jax", runs[1].spec, runs[1].labels)
    with pytest.raises(ValueError, match="one backend"):
        run_batch([runs[0], other], tmp_path)

    def unavailable(name):
        raise BackendUnavailable(f"backend {name!r} needs a framework; install it with: pip x")

    monkeypatch.setattr(hrta.backends, "require_backend", unavailable)
    manifest = run_batch(runs, tmp_path, missing="skip", log=lambda line: None)
    assert manifest["runs"] == [] and len(manifest["skipped"]) == 2
    assert "pip x" in manifest["skipped"][0]["reason"]
    with pytest.raises(BackendUnavailable):
        run_batch(runs, tmp_path, missing="fail", log=lambda line: None)
    assert not any(tmp_path.iterdir())


def test_grid_schema_describes_every_field():
    schema = yaml.safe_load(hgrid.SCHEMA_PATH.read_text())

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{key} has no description"
            walk(sub, f"{path}.{key}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{path}.<name>")
        for name, sub in node.get("$defs", {}).items():
            walk(sub, f"$defs.{name}")

    walk(schema, "grid")
    config = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    walk(config, "config")
    assert config["additionalProperties"] is False and schema["additionalProperties"] is False


def test_cli_grid_counts_and_batch_trains(tmp_path, capsys):
    from hrta.cli import main

    assert main(["grid", str(ROOT / "benchmarks" / "smoke.yaml")]) == 0
    assert "16 tuned cells" in capsys.readouterr().out
    grid = hgrid.parse_grid(_tiny(methods=["relu"]), "tiny")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(hgrid.plan_document(grid, hgrid.tune_runs(grid)[:2], 10)))
    manifest = tmp_path / "m.json"
    args = ["batch", str(plan), "--phase", "tune", "--backend", "numpy", "--batch", "0",
            "--runs-root", str(tmp_path / "runs"), "--manifest", str(manifest)]
    assert main(args) == 0
    assert json.loads(manifest.read_text())["trained"] == 2
    assert main([*args[:7], "5", *args[8:]]) == 2  # no such batch: bad input
