"""The seven tasks of HRTA-SPEC.md section 9: target formulas (independent re-implementations and
hand-computed values) and the sampling rules, through hrta.tasks and hrta.inputs.build_inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from hrta import model
from hrta.inputs import build_inputs
from hrta.spec import parse_spec
from hrta.tasks import TASKS, Task, register_task, teacher_weights

EXPECTED = {  # name: (d, low, high)
    "sin1d": (1, -1.0, 1.0),
    "multiscale1d": (1, -1.0, 1.0),
    "abs1d": (1, -1.0, 1.0),
    "sin2d": (2, -1.0, 1.0),
    "franke2d": (2, 0.0, 1.0),
    "friedman1": (5, 0.0, 1.0),
    "teacher": (4, -1.0, 1.0),
}


def _inputs(task, n_train=30, n_test=40, noise=0.0, seed=0):
    return build_inputs(parse_spec({
        "task": {"name": task, "n_train": n_train, "n_test": n_test, "noise": noise},
        "model": {"width": 3}, "homotopy": [{"s": 1.0, "steps": 2}],
        "optimizer": {"name": "sgd", "lr": 0.1}, "seed": seed}))


def test_registry_holds_the_seven_tasks_with_their_dimensions_and_domains():
    for name, (d, low, high) in EXPECTED.items():
        task = TASKS[name]
        assert (task.dim, task.low, task.high) == (d, low, high), name


# ---------------------------------------------------------------------------- targets


def _franke_reference(x: float, y: float) -> float:
    """Franke (1979), written out term by term in the usual (x, y) notation."""
    return (3 / 4 * math.exp(-((9 * x - 2) ** 2 + (9 * y - 2) ** 2) / 4)
            + 3 / 4 * math.exp(-((9 * x + 1) ** 2) / 49 - (9 * y + 1) / 10)
            + 1 / 2 * math.exp(-((9 * x - 7) ** 2 + (9 * y - 3) ** 2) / 4)
            - 1 / 5 * math.exp(-((9 * x - 4) ** 2) - (9 * y - 7) ** 2))


def _pointwise(name: str, x: np.ndarray) -> float:
    """Independent scalar re-implementations of the table of spec section 9."""
    if name == "sin1d":
        return math.sin(2 * math.pi * x[0])
    if name == "multiscale1d":
        return math.sin(2 * math.pi * x[0]) + 0.25 * math.sin(16 * math.pi * x[0])
    if name == "abs1d":
        return abs(x[0])
    if name == "sin2d":
        return math.sin(math.pi * x[0]) * math.sin(math.pi * x[1])
    if name == "franke2d":
        return _franke_reference(x[0], x[1])
    if name == "friedman1":
        return (10 * math.sin(math.pi * x[0] * x[1]) + 20 * (x[2] - 0.5) ** 2 + 10 * x[3]
                + 5 * x[4]) / 10
    raise AssertionError(name)


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "teacher"])
def test_target_matches_an_independent_formula(name):
    task = TASKS[name]
    X = np.random.default_rng(11).uniform(task.low, task.high, size=(50, task.dim))
    y = task.target(X)
    assert y.shape == (50,) and y.dtype == np.float64
    np.testing.assert_allclose(y, [_pointwise(name, x) for x in X], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(("name", "x", "value"), [
    ("sin1d", [0.25], 1.0),
    ("sin1d", [-0.25], -1.0),
    ("sin1d", [1.0], 0.0),
    ("multiscale1d", [0.25], 1.0),            # sin(pi/2) + 0.25 sin(4 pi)
    ("multiscale1d", [1 / 32], math.sin(math.pi / 16) + 0.25),
    ("abs1d", [-0.75], 0.75),
    ("abs1d", [0.0], 0.0),
    ("sin2d", [0.5, 0.5], 1.0),
    ("sin2d", [-0.5, 0.5], -1.0),
    ("sin2d", [1.0, 0.3], 0.0),
    # Franke at the origin: only the first two exponentials matter
    ("franke2d", [0.0, 0.0], 0.75 * math.exp(-2) + 0.75 * math.exp(-1 / 49 - 0.1)
     + 0.5 * math.exp(-14.5) - 0.2 * math.exp(-65)),
    # at (2/9, 2/9) the first bump is at its centre: 9x - 2 = 0
    ("franke2d", [2 / 9, 2 / 9], 0.75 + 0.75 * math.exp(-9 / 49 - 0.3)
     + 0.5 * math.exp(-26 / 4) - 0.2 * math.exp(-29)),
    ("friedman1", [0.0, 0.0, 0.0, 0.0, 0.0], 0.5),           # 20 * 0.25 / 10
    ("friedman1", [1.0, 0.5, 0.5, 1.0, 1.0], 2.5),           # (10 + 0 + 10 + 5) / 10
    ("friedman1", [1.0, 1.0, 1.0, 0.0, 0.0], 0.5),           # sin(pi) = 0, 20 * 0.25
], ids=lambda v: str(v))
def test_target_known_values(name, x, value):
    got = TASKS[name].target(np.array([x], dtype=np.float64))
    np.testing.assert_allclose(got, [value], rtol=1e-12, atol=1e-15)


def test_teacher_is_a_width_32_relu_network_from_seed_1234():
    rng = np.random.default_rng(1234)
    W, b, a = rng.standard_normal((32, 4)), rng.standard_normal(32), rng.standard_normal(32)
    got_W, got_b, got_a = teacher_weights()
    np.testing.assert_array_equal(got_W, W)
    np.testing.assert_array_equal(got_b, b)
    np.testing.assert_array_equal(got_a, a)
    X = np.random.default_rng(0).uniform(-1, 1, size=(64, 4))
    # the form of spec section 1 with s = 1 (ReLU), 1/sqrt(32) scaling
    expected = model.forward({"W": W, "b": b, "a": a}, X, 1.0)
    np.testing.assert_allclose(TASKS["teacher"].target(X), expected, rtol=1e-13, atol=1e-14)
    explicit = np.array([sum(a[r] * max(W[r] @ x + b[r], 0.0) for r in range(32)) / math.sqrt(32)
                         for x in X])
    np.testing.assert_allclose(TASKS["teacher"].target(X), explicit, rtol=1e-12, atol=1e-13)
    assert np.std(expected) > 0.1  # not a degenerate teacher


def test_teacher_is_independent_of_the_run_seed_and_of_global_state():
    X = np.random.default_rng(5).uniform(-1, 1, size=(10, 4))
    before = TASKS["teacher"].target(X)
    runs = [_inputs("teacher", seed=seed) for seed in (0, 1, 99)]
    np.random.seed(123)  # the legacy global generator plays no part
    np.testing.assert_array_equal(TASKS["teacher"].target(X), before)
    for inp in runs:  # each run's targets are the same fixed teacher at its own points
        np.testing.assert_array_equal(inp.y_train, TASKS["teacher"].target(inp.X_train))
    assert not np.array_equal(runs[0].X_train, runs[1].X_train)


# ---------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("name", ["sin1d", "multiscale1d", "abs1d"])
def test_one_dimensional_tasks_train_on_equispaced_points_including_both_ends(name):
    inp = _inputs(name, n_train=21)
    x = inp.X_train[:, 0]
    assert inp.X_train.shape == (21, 1)
    assert x[0] == -1.0 and x[-1] == 1.0
    np.testing.assert_allclose(np.diff(x), 0.1, rtol=1e-12)
    np.testing.assert_array_equal(inp.y_train, TASKS[name].target(inp.X_train))
    # the grid does not depend on the seed; the test points do
    other = _inputs(name, n_train=21, seed=7)
    np.testing.assert_array_equal(other.X_train, inp.X_train)
    assert not np.array_equal(other.X_test, inp.X_test)
    # n_train = 2 is just the two ends
    np.testing.assert_array_equal(_inputs(name, n_train=2).X_train[:, 0], [-1.0, 1.0])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_points_are_uniform_within_the_domain(name):
    d, low, high = EXPECTED[name]
    inp = _inputs(name, n_train=400, n_test=2000, seed=3)
    samples = [inp.X_test] if d == 1 else [inp.X_train, inp.X_test]
    for X in samples:
        assert X.shape[1] == d
        assert np.all(low <= X) and np.all(high >= X)
        for j in range(d):  # each coordinate uniform on [low, high] (fixed seed: deterministic)
            u = (X[:, j] - low) / (high - low)
            assert stats.kstest(u, "uniform").pvalue > 1e-4, (name, j)
        if d > 1:  # coordinates independent: no sizeable correlation
            corr = np.corrcoef(X.T)
            assert np.max(np.abs(corr - np.eye(d))) < 0.2
    if d > 1:
        assert not np.array_equal(inp.X_train, _inputs(name, 400, 2000, seed=4).X_train)
    np.testing.assert_array_equal(inp.y_test, TASKS[name].target(inp.X_test))


@pytest.mark.parametrize("name", ["sin2d", "friedman1", "sin1d"])
def test_test_stream_is_independent_of_the_training_stream(name):
    base = _inputs(name, n_train=30, n_test=40)
    more_train = _inputs(name, n_train=60, n_test=40)
    more_test = _inputs(name, n_train=30, n_test=80)
    # changing how many training points are drawn leaves the test points alone, and vice versa
    np.testing.assert_array_equal(more_train.X_test, base.X_test)
    np.testing.assert_array_equal(more_test.X_train, base.X_train)
    np.testing.assert_array_equal(more_test.X_test[:40], base.X_test)
    if TASKS[name].dim > 1:
        np.testing.assert_array_equal(more_train.X_train[:30], base.X_train)
        assert not np.isin(base.X_test, base.X_train).any()  # not the same draws


@pytest.mark.parametrize("name", ["sin1d", "franke2d", "teacher"])
def test_noise_is_added_to_training_targets_only(name):
    clean = _inputs(name, n_train=400, n_test=50)
    noisy = _inputs(name, n_train=400, n_test=50, noise=0.3)
    np.testing.assert_array_equal(noisy.X_train, clean.X_train)
    np.testing.assert_array_equal(noisy.X_test, clean.X_test)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)  # test targets are exact
    np.testing.assert_array_equal(clean.y_train, TASKS[name].target(clean.X_train))
    residual = noisy.y_train - clean.y_train
    assert abs(np.std(residual) - 0.3) < 0.05 and abs(np.mean(residual)) < 0.06
    assert stats.normaltest(residual).pvalue > 1e-4
    # the noise stream is separate from the initial parameters
    np.testing.assert_array_equal(noisy.W0, clean.W0)


def test_user_can_register_a_task():
    task = Task("test_cubic_tmp", 3, -2.0, 2.0, lambda x: x[:, 0] ** 3 - x[:, 2])
    try:
        register_task(task)
        with pytest.raises(ValueError, match="already registered"):
            register_task(task)
        inp = _inputs("test_cubic_tmp", n_train=25, n_test=5)
        assert inp.X_train.shape == (25, 3)
        assert np.all(np.abs(inp.X_train) <= 2.0)
        np.testing.assert_allclose(inp.y_train, inp.X_train[:, 0] ** 3 - inp.X_train[:, 2])
    finally:
        TASKS.pop("test_cubic_tmp", None)
    with pytest.raises(ValueError, match="high > low"):
        register_task(Task("test_bad_tmp", 1, 1.0, 1.0, lambda x: x[:, 0]))
    assert "test_bad_tmp" not in TASKS
