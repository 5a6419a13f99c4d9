"""The reference's optimizers (hrta.optim) and LR schedules (hrta.schedules.learning_rates)
held step by step against torch.optim and torch.optim.lr_scheduler, in float64.

Tolerances. The spec follows PyTorch's conventions, so the two sides compute the same formulas;
they differ only in the order of a few roundings (torch's Adam divides sqrt(v) by
sqrt(1 - b2^t) and folds 1/(1 - b1^t) into the step size; torch's schedulers update the
learning rate recursively while the reference uses closed forms). Each step therefore adds a
few ulps of relative error; over the <= 60 steps used here, with the gradient fed back from the
model, the largest relative difference seen is about 1e-14. ``RTOL = 1e-12`` (``ATOL = 1e-14``
for entries near zero) is thus a bound on float64 round-off with a 100x margin, not a modelling
tolerance: a wrong formula (a missing bias correction, eps in the wrong place, the other
momentum convention) misses it by many orders of magnitude.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hrta import model, optim, schedules
from hrta.backends.numpy_backend import NumpyBackend
from hrta.inputs import build_inputs
from hrta.spec import LRScheduleSpec, parse_spec

RTOL, ATOL = 1e-12, 1e-14


def _problem(seed: int = 0, n: int = 6, d: int = 2, m: int = 5):
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((m, d)), "b": rng.standard_normal(m),
              "a": rng.standard_normal(m)}
    X = rng.uniform(-1.0, 1.0, size=(n, d))
    y = np.sin(3 * X[:, 0])
    return params, X, y


def _torch_optimizer(name: str, tensors, lr: float, **kw):
    if name == "sgd":
        return torch.optim.SGD(tensors, lr=lr, momentum=kw.get("momentum", 0.0),
                               nesterov=kw.get("nesterov", False), foreach=False)
    return torch.optim.Adam(tensors, lr=lr, betas=kw.get("betas", (0.9, 0.999)),
                            eps=kw.get("eps", 1e-8), foreach=False)


def _reference_optimizer(name: str, **kw) -> optim.Optimizer:
    if name == "sgd":
        return optim.sgd(kw.get("momentum", 0.0), kw.get("nesterov", False))
    return optim.adam(*kw.get("betas", (0.9, 0.999)), kw.get("eps", 1e-8))


def _compare_trajectories(name, kw, lrs, trainable=("W", "b", "a"), s=0.7, seed=0):
    """Run both optimizers with their own gradients (the reference's hand-derived gradient at
    each side's own parameters) and compare the parameters after every step."""
    params, X, y = _problem(seed)
    ref = {k: v.copy() for k, v in params.items()}
    tens = {k: torch.tensor(v.copy(), dtype=torch.float64) for k, v in params.items()}
    opt_t = _torch_optimizer(name, [tens[k] for k in trainable], float(lrs[0]), **kw)
    opt_r = _reference_optimizer(name, **kw)
    state = opt_r.init({k: ref[k] for k in trainable})
    for k, lr in enumerate(lrs):
        _, g_ref = model.loss_and_grad(ref, X, y, s, trainable)
        trained, state = opt_r.update(g_ref, state, {key: ref[key] for key in trainable}, lr)
        ref = {**ref, **trained}

        _, g_t = model.loss_and_grad({key: t.numpy() for key, t in tens.items()}, X, y, s,
                                     trainable)
        for key in trainable:
            tens[key].grad = torch.from_numpy(g_t[key].copy())
        for group in opt_t.param_groups:
            group["lr"] = float(lr)
        opt_t.step()
        for key in params:
            np.testing.assert_allclose(ref[key], tens[key].numpy(), rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name} {kw}: {key} after step {k + 1}")
    # the problem is not trivial: the parameters moved
    for key in trainable:
        assert np.max(np.abs(ref[key] - params[key])) > 1e-3
    for key in set(params) - set(trainable):
        np.testing.assert_array_equal(ref[key], params[key])


OPTIMIZER_CASES = [
    ("sgd", {}, 0.05),
    ("sgd", {"momentum": 0.9}, 0.02),
    ("sgd", {"momentum": 0.5, "nesterov": True}, 0.03),
    ("sgd", {"momentum": 0.9, "nesterov": True}, 0.01),
    ("adam", {}, 0.01),
    ("adam", {"betas": (0.8, 0.99), "eps": 1e-6}, 0.02),
    ("adam", {"betas": (0.0, 0.5), "eps": 1e-3}, 0.005),
]


@pytest.mark.parametrize(("name", "kw", "lr"), OPTIMIZER_CASES,
                         ids=[f"{n}-{kw}" for n, kw, _ in OPTIMIZER_CASES])
@pytest.mark.parametrize("trainable", [("W", "b", "a"), ("W", "b")], ids=["all", "frozen_a"])
def test_optimizer_matches_torch_step_by_step(name, kw, lr, trainable):
    _compare_trajectories(name, kw, np.full(40, lr), trainable)


@pytest.mark.parametrize(("name", "kw", "lr"), OPTIMIZER_CASES[1:],
                         ids=[f"{n}-{kw}" for n, kw, _ in OPTIMIZER_CASES[1:]])
def test_optimizer_with_varying_lr_matches_torch(name, kw, lr):
    """lr changes every step (as under a schedule): state updates must not depend on lr."""
    lrs = lr * (1.0 + 0.5 * np.sin(np.arange(40)))
    _compare_trajectories(name, kw, lrs)


def test_optimizer_functions_do_not_mutate_their_inputs():
    params, X, y = _problem()
    _, grads = model.loss_and_grad(params, X, y, 0.5)
    for opt in (optim.sgd(0.9, True), optim.adam()):
        state = opt.init(params)
        snapshot = {k: v.copy() for k, v in params.items()}
        grads_copy = {k: v.copy() for k, v in grads.items()}
        new_params, new_state = opt.update(grads, state, params, 0.1)
        new_params, _ = opt.update(grads, new_state, new_params, 0.1)
        for key in params:
            np.testing.assert_array_equal(params[key], snapshot[key])
            np.testing.assert_array_equal(grads[key], grads_copy[key])
        assert opt.init(params) is not state


def test_from_spec_builds_each_optimizer():
    sgd = parse_spec({"task": "sin1d", "homotopy": [{"s": 1, "steps": 1}],
                      "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9,
                                    "nesterov": True}})
    params, X, y = _problem()
    _, grads = model.loss_and_grad(params, X, y, 1.0)
    got, _ = optim.from_spec(sgd.optimizer).update(grads, {k: np.zeros_like(v)
                                                           for k, v in params.items()},
                                                   params, 0.1)
    # first nesterov step from zero velocity: theta - lr (g + mu g)
    for key in params:
        np.testing.assert_allclose(got[key], params[key] - 0.1 * 1.9 * grads[key], rtol=1e-15)


# ---------------------------------------------------------------------------- LR schedules


def _torch_lrs(schedule: LRScheduleSpec, lr0: float, K: int) -> np.ndarray:
    """lr_k, k = 0..K-1, as torch's scheduler hands them to the optimizer."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr0)
    if schedule.name == "constant":
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    elif schedule.name == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=schedule.step_size,
                                                gamma=schedule.gamma)
    elif schedule.name == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(schedule.milestones),
                                                     gamma=schedule.gamma)
    elif schedule.name == "exponential":
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=schedule.gamma)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=K, eta_min=schedule.eta_min)
    out = []
    for _ in range(K):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros_like(p)
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step()
    return np.asarray(out, dtype=np.float64)


SCHEDULES = [
    LRScheduleSpec("constant"),
    LRScheduleSpec("step", step_size=7, gamma=0.5),
    LRScheduleSpec("step", step_size=1, gamma=0.9),
    LRScheduleSpec("multistep", milestones=(5, 12, 30), gamma=0.3),
    LRScheduleSpec("multistep", milestones=(1, 59), gamma=2.0),
    LRScheduleSpec("exponential", gamma=0.95),
    LRScheduleSpec("cosine", eta_min=0.0),
    LRScheduleSpec("cosine", eta_min=1e-3),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=[str(s.to_dict()) for s in SCHEDULES])
def test_learning_rates_match_torch_schedulers(schedule):
    lr0, K = 0.1, 60
    ours = schedules.learning_rates(schedule, lr0, K)
    assert ours.shape == (K,) and ours.dtype == np.float64
    assert ours[0] == lr0
    np.testing.assert_allclose(ours, _torch_lrs(schedule, lr0, K), rtol=RTOL, atol=ATOL)


SCHEDULE_STRATEGY = st.one_of(
    st.just(LRScheduleSpec("constant")),
    st.builds(lambda n, g: LRScheduleSpec("step", step_size=n, gamma=g),
              st.integers(1, 20), st.floats(0.05, 1.5)),
    st.builds(lambda ms, g: LRScheduleSpec("multistep", milestones=tuple(sorted(ms)), gamma=g),
              st.sets(st.integers(1, 50), min_size=1, max_size=5), st.floats(0.05, 1.5)),
    st.builds(lambda g: LRScheduleSpec("exponential", gamma=g), st.floats(0.8, 1.05)),
    st.builds(lambda e: LRScheduleSpec("cosine", eta_min=e), st.floats(0.0, 0.05)),
)


@settings(max_examples=40, deadline=None)
@given(schedule=SCHEDULE_STRATEGY, lr0=st.floats(1e-4, 1.0), K=st.integers(1, 50))
def test_learning_rates_match_torch_schedulers_property(schedule, lr0, K):
    np.testing.assert_allclose(schedules.learning_rates(schedule, lr0, K),
                               _torch_lrs(schedule, lr0, K), rtol=RTOL, atol=ATOL * lr0)


@pytest.mark.parametrize("schedule", SCHEDULES[1:], ids=[str(s.to_dict()) for s in SCHEDULES[1:]])
@pytest.mark.parametrize(("name", "kw"), [("sgd", {"momentum": 0.9, "nesterov": True}),
                                          ("adam", {})], ids=["sgd-nesterov", "adam"])
def test_optimizer_driven_by_torch_scheduler_matches_reference(schedule, name, kw):
    """The whole update loop: torch's optimizer with torch's scheduler stepping the lr, against
    the reference optimizer fed the precomputed lr_k."""
    K, lr0, s = 40, 0.02, 1.3
    params, X, y = _problem(3)
    tens = {k: torch.tensor(v.copy(), dtype=torch.float64) for k, v in params.items()}
    opt_t = _torch_optimizer(name, list(tens.values()), lr0, **kw)
    if schedule.name == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt_t, schedule.step_size, schedule.gamma)
    elif schedule.name == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt_t, list(schedule.milestones),
                                                     schedule.gamma)
    elif schedule.name == "exponential":
        sched = torch.optim.lr_scheduler.ExponentialLR(opt_t, schedule.gamma)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_t, T_max=K,
                                                           eta_min=schedule.eta_min)
    lrs = schedules.learning_rates(schedule, lr0, K)
    opt_r = _reference_optimizer(name, **kw)
    ref = {k: v.copy() for k, v in params.items()}
    state = opt_r.init(ref)
    for k in range(K):
        _, g = model.loss_and_grad(ref, X, y, s)
        ref, state = opt_r.update(g, state, ref, lrs[k])
        _, g_t = model.loss_and_grad({key: t.numpy() for key, t in tens.items()}, X, y, s)
        for key, t in tens.items():
            t.grad = torch.from_numpy(g_t[key].copy())
        opt_t.step()
        sched.step()
        for key in params:
            np.testing.assert_allclose(ref[key], tens[key].numpy(), rtol=RTOL, atol=ATOL,
                                       err_msg=f"{key} after step {k + 1}")


# ---------------------------------------------------------------------------- a whole run


def _torch_training(inputs) -> np.ndarray:
    """An independent torch implementation of spec section 5 (autograd, torch.optim, a new
    optimizer at every reset): the full-training-set losses L_0..L_K and theta_K."""
    spec = inputs.spec
    trainable = spec.model.train
    t = {"W": torch.tensor(inputs.W0), "b": torch.tensor(inputs.b0), "a": torch.tensor(inputs.a0)}
    for key in trainable:
        t[key].requires_grad_(True)
    X, y = torch.tensor(inputs.X_train), torch.tensor(inputs.y_train)
    root_m = float(np.sqrt(spec.model.width))

    def loss_fn(Xb, yb, s):
        z = Xb @ t["W"].T + t["b"]
        f = ((1 - s) * z + s * torch.relu(z)) @ t["a"] / root_m
        return ((f - yb) ** 2).sum() / (2 * Xb.shape[0])

    def make():
        o = spec.optimizer
        tensors = [t[k] for k in trainable]
        if o.name == "sgd":
            return torch.optim.SGD(tensors, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                   foreach=False)
        return torch.optim.Adam(tensors, lr=o.lr, betas=o.betas, eps=o.eps, foreach=False)

    opt = make()
    K = spec.total_steps
    losses = []
    for k in range(K):
        s = float(inputs.s[k])
        with torch.no_grad():
            losses.append(float(loss_fn(X, y, s)))
        if inputs.reset[k]:
            opt = make()
        idx = slice(None) if inputs.batches is None else torch.from_numpy(inputs.batches[k])
        opt.zero_grad()
        loss_fn(X[idx], y[idx], s).backward()
        for group in opt.param_groups:
            group["lr"] = float(inputs.lr[k])
        opt.step()
    with torch.no_grad():
        losses.append(float(loss_fn(X, y, float(inputs.s[-1]))))
    return np.asarray(losses), {k: v.detach().numpy() for k, v in t.items()}


@pytest.mark.parametrize("optimizer", [{"name": "sgd", "lr": 0.05, "momentum": 0.9},
                                       {"name": "adam", "lr": 0.01}], ids=["sgd", "adam"])
@pytest.mark.parametrize("extras", [
    {"batch_size": None, "reset_optimizer_each_stage": False},
    {"batch_size": 5, "reset_optimizer_each_stage": True,
     "model": {"width": 9, "train": ["W", "b"]}},
], ids=["full-batch", "minibatch-reset-frozen"])
def test_reference_training_matches_an_independent_torch_loop(optimizer, extras):
    doc = {"task": {"name": "sin2d", "n_train": 12, "n_test": 5}, "model": {"width": 9},
           "homotopy": [{"s": 0.5, "steps": 8}, {"s_from": 0.5, "s_to": 1.6, "steps": 10},
                        {"s": 1.6, "steps": 7}],
           "optimizer": optimizer, "lr_schedule": {"name": "cosine", "eta_min": 0.001},
           "seed": 5, **extras}
    inputs = build_inputs(parse_spec(doc))
    result = NumpyBackend().train(inputs)
    assert result.diverged_step is None
    expected, params = _torch_training(inputs)
    np.testing.assert_allclose(result.losses, expected, rtol=RTOL, atol=ATOL)
    for key in ("W", "b", "a"):
        np.testing.assert_allclose(result.params[key], params[key], rtol=RTOL, atol=ATOL)
        moved = np.max(np.abs(params[key] - getattr(inputs, f"{key}0")))
        assert (moved > 1e-3) == (key in inputs.spec.model.train)
