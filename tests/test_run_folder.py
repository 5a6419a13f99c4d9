"""``hrta train`` with the numpy reference writes the run folder of HRTA-SPEC.md section 7, for
every task, optimizer and LR schedule: inputs.npz, history.csv (rows at k % log_every == 0 and
a final row at step K with s_{K-1}), metrics.json with the required fields; an existing folder
is only replaced with --force; a diverging run is recorded, not raised."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from hrta import model
from hrta.backends.numpy_backend import NumpyBackend
from hrta.cli import main
from hrta.inputs import build_inputs, load_inputs
from hrta.run import RunFolderError, read_run
from hrta.spec import parse_spec
from hrta.tasks import TASKS

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.05},
    "momentum": {"name": "sgd", "lr": 0.02, "momentum": 0.9},
    "nesterov": {"name": "sgd", "lr": 0.02, "momentum": 0.8, "nesterov": True},
    "adam": {"name": "adam", "lr": 0.01},
}
SCHEDULES = {
    "constant": {"name": "constant"},
    "step": {"name": "step", "step_size": 2, "gamma": 0.5},
    "multistep": {"name": "multistep", "milestones": [2, 5], "gamma": 0.3},
    "exponential": {"name": "exponential", "gamma": 0.9},
    "cosine": {"name": "cosine", "eta_min": 0.001},
}
REQUIRED_METRICS = ("backend", "dtype", "seed", "train_loss", "test_mse", "test_rel_l2",
                    "diverged", "diverged_step", "wall_seconds", "gradient_evaluations",
                    "versions")
COMBOS = list(itertools.product(sorted(TASKS), OPTIMIZERS, SCHEDULES))


def _doc(task, optimizer, schedule, variant):
    """A tiny spec; ``variant`` cycles batch size, reset, frozen output layer, dtype and
    log_every so that the grid also covers those options."""
    return {
        "task": {"name": task, "n_train": 9, "n_test": 11, "noise": 0.05 * (variant % 2)},
        "model": {"width": 5, "train": ["W", "b", "a"] if variant % 3 else ["W", "b"],
                  "init_a": "rademacher" if variant % 4 == 1 else "normal"},
        "homotopy": [{"s": 0.5, "steps": 3}, {"s_from": 0.5, "s_to": 1.5, "steps": 4}],
        "optimizer": OPTIMIZERS[optimizer],
        "lr_schedule": SCHEDULES[schedule],
        "batch_size": [None, 4, 9][variant % 3],
        "reset_optimizer_each_stage": variant % 2 == 0,
        "seed": variant,
        "dtype": "float32" if variant % 5 == 0 else "float64",
        "log_every": [3, 1, 2, 7, 10][variant % 5],
    }


def _read_history(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["step", "s", "lr", "train_loss"]
        return [{"step": int(r["step"]), "s": float(r["s"]), "lr": float(r["lr"]),
                 "train_loss": float(r["train_loss"])} for r in reader]


def _check_run_folder(out: Path, spec) -> None:
    assert sorted(os.listdir(out)) == ["history.csv", "inputs.npz", "metrics.json", "params.npz"]
    inputs = load_inputs(out / "inputs.npz", spec)
    expected_inputs = build_inputs(spec)
    for key, value in expected_inputs.arrays().items():
        np.testing.assert_array_equal(getattr(inputs, key), value, err_msg=key)
    K = spec.total_steps
    history = _read_history(out / "history.csv")
    expected_steps = [k for k in range(K) if k % spec.log_every == 0] + [K]
    assert [row["step"] for row in history] == expected_steps
    for row in history:
        j = min(row["step"], K - 1)  # the last row (step K) is at s_{K-1}
        assert row["s"] == float(inputs.s[j]) and row["lr"] == float(inputs.lr[j])
    with np.load(out / "params.npz") as archive:
        params = {key: archive[key] for key in ("W", "b", "a")}
    for key in params:
        assert params[key].dtype == np.dtype(spec.dtype)
        assert params[key].shape == getattr(inputs, f"{key}0").shape
    if "a" not in spec.model.train:
        np.testing.assert_array_equal(params["a"], inputs.a0)
    # first row at theta_0 with s_0, last row at theta_K with s_{K-1}
    rtol = 1e-12 if spec.dtype == "float64" else 1e-5
    np.testing.assert_allclose(history[0]["train_loss"],
                               model.loss(inputs.initial_params(), inputs.X_train,
                                          inputs.y_train, inputs.s[0]), rtol=rtol)
    np.testing.assert_allclose(history[-1]["train_loss"],
                               model.loss(params, inputs.X_train, inputs.y_train, inputs.s[-1]),
                               rtol=rtol)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in REQUIRED_METRICS:
        assert key in metrics, key
    assert metrics["backend"] == "numpy" and metrics["dtype"] == spec.dtype
    assert metrics["seed"] == spec.seed
    assert metrics["diverged"] is False and metrics["diverged_step"] is None
    assert metrics["gradient_evaluations"] == K
    assert metrics["train_loss"] == history[-1]["train_loss"]
    assert metrics["wall_seconds"] >= 0
    assert {"numpy", "python"} <= set(metrics["versions"])
    tests = model.test_metrics({k: v.astype(np.float64) for k, v in params.items()},
                               inputs.X_test.astype(np.float64),
                               inputs.y_test.astype(np.float64), float(inputs.s[-1]))
    np.testing.assert_allclose(metrics["test_mse"], tests["test_mse"], rtol=rtol)
    np.testing.assert_allclose(metrics["test_rel_l2"], tests["test_rel_l2"], rtol=rtol)
    assert read_run(out).metrics == metrics  # the suite's own reader accepts the folder


@pytest.mark.parametrize(("task", "optimizer", "schedule"), COMBOS,
                         ids=["-".join(c) for c in COMBOS])
def test_train_writes_a_complete_run_folder(tmp_path, capsys, task, optimizer, schedule):
    variant = COMBOS.index((task, optimizer, schedule))
    doc = _doc(task, optimizer, schedule, variant)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "run"
    assert main(["train", str(spec_file), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    _check_run_folder(out, parse_spec(doc))
    assert sorted(os.listdir(tmp_path)) == ["run", "spec.yaml"]  # no staging leftovers


def test_history_with_log_every_dividing_k_and_larger_than_k(tmp_path):
    base = _doc("sin1d", "sgd", "constant", 1)
    for log_every, steps in ((7, [0, 7]), (1, list(range(8))), (100, [0, 7]), (2, [0, 2, 4, 6, 7])):
        doc = {**base, "log_every": log_every}
        spec_file = tmp_path / f"spec{log_every}.yaml"
        spec_file.write_text(yaml.safe_dump(doc))
        out = tmp_path / f"run{log_every}"
        assert main(["train", str(spec_file), "--out", str(out), "--quiet"]) == 0
        assert [r["step"] for r in _read_history(out / "history.csv")] == steps


def test_history_values_are_the_losses_of_the_trajectory(tmp_path):
    """Every logged loss is L_{s_k}(theta_k) of the reference trajectory, to the last bit."""
    doc = {**_doc("sin2d", "adam", "cosine", 1), "log_every": 2}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    assert main(["train", str(spec_file), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    result = NumpyBackend().train(build_inputs(parse_spec(doc)))
    history = _read_history(tmp_path / "run" / "history.csv")
    for row in history:
        assert row["train_loss"] == result.losses[row["step"]]


# ---------------------------------------------------------------------------- --out and --force


def _write_spec(folder: Path, **over) -> Path:
    doc = {**_doc("sin1d", "adam", "step", 1), **over}
    path = folder / f"spec{len(os.listdir(folder))}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_existing_non_empty_out_needs_force(tmp_path, capsys):
    first = _write_spec(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(first), "--out", str(out), "--quiet"]) == 0
    before = _snapshot(out)
    second = _write_spec(tmp_path, seed=42)
    assert main(["train", str(second), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--out" in err and "--force" in err
    assert _snapshot(out) == before
    # a folder with any file in it counts as non-empty
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["train", str(second), "--out", str(other), "--quiet"]) == 2
    assert os.listdir(other) == ["notes.txt"]
    capsys.readouterr()
    # --force replaces the folder with the new run, completely
    assert main(["train", str(second), "--out", str(out), "--quiet", "--force"]) == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["seed"] == 42
    assert load_inputs(out / "inputs.npz").spec.seed == 42
    assert _snapshot(out) != before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no backup left behind


def test_existing_empty_out_is_used(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    assert main(["train", str(_write_spec(tmp_path)), "--out", str(out), "--quiet"]) == 0
    assert (out / "metrics.json").is_file()


def test_same_spec_gives_byte_identical_inputs_and_history(tmp_path):
    spec = _write_spec(tmp_path)
    for name in ("a", "b"):
        assert main(["train", str(spec), "--out", str(tmp_path / name), "--quiet"]) == 0
    for file in ("inputs.npz", "history.csv", "params.npz"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_not_quiet_prints_one_summary_line(tmp_path, capsys):
    assert main(["train", str(_write_spec(tmp_path)), "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1 and "finished" in captured.out
    assert captured.err == ""  # no progress bar when stderr is not a terminal


# ---------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_diverging_run_is_recorded_not_raised(tmp_path, capsys, dtype):
    doc = {**_doc("sin1d", "sgd", "constant", 1), "optimizer": {"name": "sgd", "lr": 1e4},
           "homotopy": [{"s": 1.5, "steps": 400}], "log_every": 50, "dtype": dtype,
           "batch_size": None}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow on the way must not leak as warnings
        assert main(["train", str(spec_file), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "diverged at step" in captured.out and captured.err == ""
    metrics = json.loads((out / "metrics.json").read_text())
    step = metrics["diverged_step"]
    assert metrics["diverged"] is True and isinstance(step, int) and 0 < step < 400
    assert metrics["gradient_evaluations"] == step
    assert metrics["train_loss"] is None and metrics["test_mse"] is None
    history = _read_history(out / "history.csv")
    # the regular rows up to the divergence, then one row at the divergence step
    assert [r["step"] for r in history] == [k for k in range(0, step, 50)] + [step]
    assert all(math.isfinite(r["train_loss"]) for r in history[:-1])
    last = history[-1]
    with np.load(out / "params.npz") as archive:
        params = {k: archive[k] for k in ("W", "b", "a")}
    finite = all(np.all(np.isfinite(v)) for v in params.values())
    assert not math.isfinite(last["train_loss"]) or not finite
    assert read_run(out).metrics["diverged_step"] == step


def test_read_run_rejects_incomplete_folders(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(_write_spec(tmp_path)), "--out", str(out), "--quiet"]) == 0
    (out / "history.csv").write_text("step,s,lr,train_loss\n0,0.5,0.01,1.0\n")
    with pytest.raises(RunFolderError, match="history.csv"):
        read_run(out)
    (out / "metrics.json").unlink()
    with pytest.raises(RunFolderError, match="missing metrics.json"):
        read_run(out)
