"""The compiled and uncompiled training loops of the torch and TensorFlow backends.

Each backend has both, and a policy choosing between them per run
(:mod:`hrta.backends.compile_policy`; torch: compile when that pays for itself in the run,
TensorFlow: always XLA unless told otherwise). The contract suite (tests/test_conformance.py)
trains the registered backends as users get them, so on its short runs it checks torch's
eager loop and TensorFlow's XLA loop; here the other loop of each passes the suite's training
checks too, the decision is checked against the runs it is meant for, and bad settings fail
with the setting's name.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hrta import conformance as cf
from hrta.backends.compile_policy import ALWAYS, AUTO, NEVER, CompilePolicy
from hrta.inputs import build_inputs
from hrta.spec import parse_spec
from hrta.tolerances import FLOAT64_TARGET

MODULES = {"torch": ("torch", "hrta.backends.torch_backend", "TorchBackend"),
           "tensorflow": ("tensorflow", "hrta.backends.tensorflow_backend",
                          "TensorflowBackend")}


@pytest.fixture(params=sorted(MODULES))
def module(request):
    """The backend module (skipped without its framework)."""
    framework, name, _ = MODULES[request.param]
    pytest.importorskip(framework)
    return importlib.import_module(name)


def backend_class(module):
    return getattr(module, next(cls for _, name, cls in MODULES.values()
                                if name == module.__name__))


def compiled(module, details: dict) -> bool:
    """Whether a run's recorded loop is the compiled one."""
    if module.__name__.endswith("torch_backend"):
        return details["loop"].startswith("compiled")
    return "jit_compile=True" in details["loop"]


# ---- the loop the contract suite does not run passes its training checks -----------------

TRAINING_CHECKS = [(check, case) for check, cases in (
    (cf.check_one_step, cf.one_step_cases()),
    (cf.check_divergence, cf.divergence_cases()),
    (cf.check_trajectory, cf.trajectory_cases()),
    (cf.check_determinism, cf.determinism_cases()),
) for case in cases]


@pytest.mark.parametrize(("check", "case"), TRAINING_CHECKS,
                         ids=[f"{check.__name__[6:]}-{case.id}" for check, case in TRAINING_CHECKS])
def test_the_other_loop_passes_the_contract_suite(module, check, case):
    # the suite's runs are short: under "auto" they train uncompiled, so check the compiled loop
    backend = backend_class(module)(compile=module.POLICY.default == AUTO)
    check(backend, case)


# ---- the decision -------------------------------------------------------------------------

def spec_of(width: int, n: int, steps: int, optimizer: str = "sgd"):
    return parse_spec({"task": {"name": "sin1d", "n_train": n, "n_test": 8},
                       "model": {"width": width},
                       "homotopy": [{"s": 0.5, "steps": steps // 2},
                                    {"s_from": 0.5, "s_to": 1.5, "steps": steps - steps // 2}],
                       "optimizer": {"name": optimizer, "lr": 0.05},
                       "lr_schedule": {"name": "cosine"}, "seed": 5, "log_every": 1})


def test_short_runs_are_not_compiled_and_long_or_wide_ones_are(module):
    pays = module.POLICY.pays
    assert not pays(spec_of(16, 20, 40))  # the smoke grid's runs
    assert not pays(spec_of(64, 100, 400))  # the default grid's
    assert pays(spec_of(1000, 100, 5000))  # the paper's
    assert pays(spec_of(8192, 1024, 100))  # few steps, each 0.25-0.5 s uncompiled


@pytest.mark.parametrize(("env", "compile_seconds", "want"), [
    (None, None, None),  # the backend's default
    ("auto", None, False),  # a short run does not repay a compilation
    ("auto", 0.0, True),  # a compilation that costs nothing always pays
    ("1", None, True),
    ("0", 0.0, False),
])
def test_the_policy_decides_records_and_trains_the_same(module, env, compile_seconds, want,
                                                        monkeypatch):
    policy = module.POLICY
    if want is None:  # torch: auto (so eager here), tensorflow: always XLA
        want = policy.default in ALWAYS
    if env is None:
        monkeypatch.delenv(policy.env, raising=False)
    else:
        monkeypatch.setenv(policy.env, env)
    if compile_seconds is not None:
        monkeypatch.setattr(module, "POLICY",
                            dataclasses.replace(policy, compile_seconds=compile_seconds))
    inputs = build_inputs(spec_of(8, 12, 13, "adam"))
    got = backend_class(module)().train(inputs)
    assert compiled(module, got.details) == want
    note = got.details["compile_policy"]
    assert policy.env in note
    assert ("so not compiled" in note) == (not want and (env == "auto" or policy.default == AUTO
                                                       and env is None))
    # the other loop trains the same run to the same numbers, within the float64 target
    other = backend_class(module)(compile=not want).train(inputs)
    assert compiled(module, other.details) != want
    np.testing.assert_allclose(got.losses, other.losses, rtol=FLOAT64_TARGET, atol=0)
    for name, value in other.params.items():
        np.testing.assert_allclose(got.params[name], value, rtol=FLOAT64_TARGET, atol=0)


@pytest.mark.parametrize("value", ["yes please", "2", "compiled"])
def test_a_bad_setting_names_the_variable_and_the_choices(module, value, monkeypatch):
    monkeypatch.setenv(module.POLICY.env, value)
    with pytest.raises(ValueError, match=rf"{module.POLICY.env}: expected auto, 1 .* or 0 .*"
                                         rf"got '{value}'"):
        backend_class(module)().train(build_inputs(spec_of(8, 12, 13)))
    with pytest.raises(ValueError, match="compile: expected True, False or 'auto'"):
        backend_class(module)(compile=value)


# ---- the policy on its own -----------------------------------------------------------------

POLICY = CompilePolicy(env="HRTA_TEST_COMPILE", step_seconds=1e-3, entry_seconds=1e-8,
                       compile_seconds=2.0, compiler="the test compiler")


def test_the_estimate_is_linear_in_steps_and_in_the_intermediates():
    base = POLICY.uncompiled_seconds(spec_of(16, 20, 40))
    assert base == pytest.approx(40 * (1e-3 + 1e-8 * 16 * 20))
    assert POLICY.uncompiled_seconds(spec_of(16, 20, 80)) == pytest.approx(2 * base)
    assert POLICY.uncompiled_seconds(spec_of(32, 20, 40)) > base
    assert POLICY.uncompiled_seconds(spec_of(16, 40, 40)) > base
    # 2 s / (1e-3 + 1e-8 * 320) s = 1993.6 steps
    assert POLICY.pays(spec_of(16, 20, 1994)) and not POLICY.pays(spec_of(16, 20, 1993))


@pytest.mark.parametrize(("value", "want"), [
    *[(v, True) for v in ALWAYS], *[(v, False) for v in NEVER],
    (None, AUTO), ("", AUTO), (" Auto ", AUTO), ("ON", True), (" 0 ", False)])
def test_the_variable_reads_auto_always_or_never(value, want, monkeypatch):
    if value is None:
        monkeypatch.delenv(POLICY.env, raising=False)
    else:
        monkeypatch.setenv(POLICY.env, value)
    assert POLICY.mode() == want
    assert POLICY.mode(False) is False  # a constructor's choice wins over the variable


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=12))
def test_any_other_value_is_refused_by_name(value):
    if value.strip().lower() in (*ALWAYS, *NEVER, AUTO, ""):
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(POLICY.env, value)
        with pytest.raises(ValueError, match=f"^{POLICY.env}: expected auto"):
            POLICY.mode()


def test_the_recorded_decision_says_why(monkeypatch):
    short, long = spec_of(16, 20, 40), spec_of(16, 20, 4000)
    monkeypatch.delenv(POLICY.env, raising=False)
    assert POLICY.decide(short) == (
        False, "HRTA_TEST_COMPILE unset, default auto: the uncompiled loop's estimated 0.0401 s "
               "are within one compilation (2 s), so not compiled")
    assert POLICY.decide(long, AUTO) == (
        True, "compile='auto': the uncompiled loop's estimated 4.01 s exceed one "
              "compilation (2 s), so the test compiler used")
    assert POLICY.decide(short, True) == (True, "the test compiler always (compile=True)")
    monkeypatch.setenv(POLICY.env, "never")
    assert POLICY.decide(long) == (False, "the test compiler never (HRTA_TEST_COMPILE=never)")
    always = dataclasses.replace(POLICY, default="1")
    monkeypatch.delenv(POLICY.env)
    assert always.decide(short) == (
        True, "the test compiler always (HRTA_TEST_COMPILE unset, default 1)")
