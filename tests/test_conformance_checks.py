"""The conformance checks can fail: deliberately faulty backends (each one subtle mistake a real
backend could make) are caught, with a message naming the backend, the case, the step and the
error; an uninstalled backend is skipped with its install hint and a broken one fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from hrta import cli, model, optim
from hrta import conformance as cf
from hrta.backends.numpy_backend import NumpyBackend

CASES = {c.id: c for c in (cf.trajectory_cases() + cf.divergence_cases()
                           + cf.one_step_cases() + cf.determinism_cases())}
POINTS = {c.id: c for c in cf.point_cases()}


class Faulty(NumpyBackend):
    """The reference with one mistake: a different optimizer, or altered inputs."""

    name = "faulty"

    def __init__(self, optimizer=None, change_inputs=None, change_result=None):
        self.optimizer, self.change_inputs, self.change_result = (optimizer, change_inputs,
                                                                  change_result)

    def train(self, inputs, progress=None):
        if self.change_inputs:
            inputs = self.change_inputs(inputs)
        saved = optim.from_spec
        if self.optimizer:
            optim.from_spec = self.optimizer
        try:
            result = super().train(inputs, progress)
        finally:
            optim.from_spec = saved
        return self.change_result(result) if self.change_result else result


def keras_adam(spec):
    """Keras' Adam: eps added to sqrt(v) before bias correction ("epsilon hat")."""
    b1, b2 = spec.betas

    def update(grads, state, params, lr):
        t = state["t"] + 1
        new, m_new, v_new = {}, {}, {}
        for key, g in grads.items():
            m = b1 * state["m"][key] + (1 - b1) * g
            v = b2 * state["v"][key] + (1 - b2) * g * g
            lr_t = g.dtype.type(lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t))
            new[key] = params[key] - lr_t * m / (np.sqrt(v) + g.dtype.type(spec.eps))
            m_new[key], v_new[key] = m, v
        return new, {"t": t, "m": m_new, "v": v_new}

    return optim.Optimizer(optim.adam().init, update)


def fails(check, backend, case_id, *fragments):
    case = CASES.get(case_id) or POINTS[case_id]
    if case_id in CASES:
        cf.reference_outcome(case)  # computed with the true optimizer, then cached
    with pytest.raises(cf.ConformanceError) as info:
        check(backend, case)
    message = str(info.value)
    assert "backend 'faulty'" in message and case_id in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_reference_passes_its_own_checks():
    ref = NumpyBackend()
    cf.check_trajectory(ref, CASES["adam-cosine-multistage-float32"])
    cf.check_divergence(ref, CASES["diverge-sgd-lr50-float64"])


def test_keras_adam_epsilon_is_caught_at_step_1_in_float64():
    fails(cf.check_trajectory, Faulty(optimizer=keras_adam), "adam-constant-constant-float64",
          "train_loss at step 1:")


def test_keras_adam_epsilon_is_caught_in_float32_over_the_long_run():
    fails(cf.check_trajectory, Faulty(optimizer=keras_adam),
          "long-adam-cosine-multistage-float32", "train_loss at step")


def test_nesterov_done_as_plain_momentum_is_caught_at_step_1():
    wrong = Faulty(optimizer=lambda spec: optim.sgd(spec.momentum, nesterov=False))
    # the first step already differs: Nesterov moves by (1 + mu) g, plain momentum by g
    fails(cf.check_one_step, wrong, "one-step-nesterov-float64", "train_loss at step 1:")
    fails(cf.check_trajectory, wrong, "nesterov-constant-constant-float64", "at step 1:")


def test_ignoring_optimizer_resets_is_caught_after_the_first_stage():
    def no_reset(inputs):
        return replace(inputs, spec=replace(inputs.spec, reset_optimizer_each_stage=False))

    message = fails(cf.check_trajectory, Faulty(change_inputs=no_reset),
                    "momentum-constant-multistage-float64")
    first_reset = cf.MATRIX_STEPS // 3
    assert f"at step {first_reset + 1}:" in message, message


def test_ignoring_the_lr_schedule_is_caught_after_the_first_change():
    def constant_lr(inputs):
        return replace(inputs, lr=np.full_like(inputs.lr, inputs.lr[0]))

    step_size = cf.MATRIX_STEPS // 4
    fails(cf.check_trajectory, Faulty(change_inputs=constant_lr),
          "sgd-step-constant-float64", f"at step {step_size + 1}:")


def test_relu_instead_of_the_homotopy_is_caught_at_step_0():
    def relu(inputs):
        return replace(inputs, s=np.ones_like(inputs.s))

    fails(cf.check_trajectory, Faulty(change_inputs=relu), "sgd-constant-ramp-float32",
          "at step 0:")


def test_float64_parameters_from_a_float32_run_are_caught():
    def widen(result):
        result.params = {k: v.astype(np.float64) for k, v in result.params.items()}
        return result

    fails(cf.check_trajectory, Faulty(change_result=widen), "sgd-constant-constant-float32",
          "as float64, expected float32")


def test_a_run_that_does_not_diverge_is_caught():
    def tame(inputs):
        return replace(inputs, lr=inputs.lr / 1000)

    fails(cf.check_divergence, Faulty(change_inputs=tame), "diverge-sgd-lr50-float64",
          "diverge")


def test_nondeterminism_is_caught():
    def jitter(result):
        noise = 1 + np.random.default_rng().uniform(1e-12, 1e-11)
        result.params = {**result.params, "W": result.params["W"] * noise}
        return result

    fails(cf.check_determinism, Faulty(change_result=jitter), "determinism-nesterov-float64",
          "final parameter W differs")


class WrongForward(NumpyBackend):
    name = "faulty"

    def forward(self, params, X, s):
        return model.forward(params, X, 1.0)  # always ReLU

    def loss_and_grad(self, params, X, y, s, trainable):
        value, grads = model.loss_and_grad(params, X, y, s, ("W", "b", "a"))
        grads["a"] = grads["a"] * np.sqrt(params["W"].shape[0])  # the 1/sqrt(m) forgotten
        return float(value), grads


def test_a_wrong_forward_pass_is_caught():
    fails(cf.check_forward, WrongForward(), "sin1d-all-float64", "f_s(X)", "(s=0.0)")


def test_wrong_or_extra_gradients_are_caught():
    fails(cf.check_gradient, WrongForward(), "sin1d-all-float32", "dL/da")
    fails(cf.check_gradient, WrongForward(), "friedman1-frozen-a-float64",
          "gradients returned for")


# ---------------------------------------------------------------------------- the registry

GHOSTS = textwrap.dedent("""
    from hrta.backends.numpy_backend import NumpyBackend

    class Missing(NumpyBackend):
        name = "ghost"
        framework = "a_framework_that_is_not_installed"
        install_hint = "pip install ghost-framework"
""")

RUNNER = textwrap.dedent("""
    import sys
    from importlib.metadata import EntryPoint
    from hrta import conformance
    from hrta.backends import registry

    found = dict(registry._entry_points())
    found["ghost"] = EntryPoint("ghost", "ghostmod:Missing", registry.GROUP)
    found["broken"] = EntryPoint("broken", "no_such_module_anywhere:Backend", registry.GROUP)
    registry._entry_points.cache_clear()
    registry._entry_points = lambda: found
    sys.exit(conformance.run_pytest(sys.argv[1:], ["-k", "test_forward and sin1d-all-float64",
                                                   "-rsf"]))
""")


def run_suite(tmp_path, *backends):
    (tmp_path / "ghostmod.py").write_text(GHOSTS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", RUNNER, *backends], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)


def test_uninstalled_backend_is_skipped_with_its_install_hint_and_broken_one_fails(tmp_path):
    skipped = run_suite(tmp_path, "ghost")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 skipped" in skipped.stdout and "passed" not in skipped.stdout
    assert "pip install ghost-framework" in skipped.stdout
    broken = run_suite(tmp_path, "broken")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "1 error" in broken.stdout  # pytest.fail in the backend fixture
    assert "no_such_module_anywhere" in broken.stdout


def test_conformance_command_refuses_an_unknown_backend(capsys):
    assert cli.main(["conformance", "--backend", "no-such-backend"]) == 2
    assert "unknown backend 'no-such-backend'" in capsys.readouterr().err
