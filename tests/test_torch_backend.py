"""The torch backend's machinery beyond the contract suite (tests/test_conformance.py).

Two code paths of the compiled step are never the default and so are checked against it
here: several training steps per compiled call (``UNROLL``, with a partial last call and a
divergence inside a call), and the Dynamo-guarded call that replaces the direct graph call
when the compiled graph's inputs cannot be matched. (The compiled step itself passes the
contract suite in tests/test_compiled_loops.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from hrta.backends import torch_backend as tb  # noqa: E402
from hrta.inputs import build_inputs  # noqa: E402
from hrta.spec import parse_spec  # noqa: E402

COMPILED = tb.TorchBackend(compile=True)


def inputs_of(optimizer: dict, *, batch_size=None, reset=False, train=("W", "b", "a"),
              dtype="float64"):
    """13 steps in two stages (an odd K, so that no UNROLL > 1 divides it)."""
    return build_inputs(parse_spec({
        "task": {"name": "sin1d", "n_train": 12, "n_test": 8},
        "model": {"width": 8, "train": list(train)},
        "homotopy": [{"s": 0.5, "steps": 7}, {"s_from": 0.5, "s_to": 1.5, "steps": 6}],
        "optimizer": optimizer,
        "lr_schedule": {"name": "cosine"},
        "batch_size": batch_size,
        "reset_optimizer_each_stage": reset,
        "dtype": dtype,
        "seed": 5,
        "log_every": 1,
    }))


CASES = {
    "adam-reset": dict(optimizer={"name": "adam", "lr": 0.05}, reset=True),
    "nesterov-minibatch": dict(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9,
                                          "nesterov": True}, batch_size=5),
    "sgd-frozen-a-float32": dict(optimizer={"name": "sgd", "lr": 0.2}, train=("W", "b"),
                                 dtype="float32"),
    # lr 1e4 overflows within a few steps: the divergence step must not depend on the path
    "diverges": dict(optimizer={"name": "sgd", "lr": 1.0e4, "momentum": 0.9}),
}


def train(inputs):
    return COMPILED.train(inputs)


def assert_same_training(got, want):
    assert got.diverged_step == want.diverged_step
    np.testing.assert_array_equal(np.isfinite(got.losses), np.isfinite(want.losses))
    finite = np.isfinite(want.losses)
    np.testing.assert_allclose(got.losses[finite], want.losses[finite], rtol=1e-12, atol=0)
    for name, value in want.params.items():
        ok = np.isfinite(value)
        np.testing.assert_array_equal(np.isfinite(got.params[name]), ok)
        np.testing.assert_allclose(got.params[name][ok], value[ok], rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("unroll", [2, 3])
def test_several_steps_per_call_train_as_one(case, unroll, monkeypatch):
    inputs = inputs_of(**CASES[case])
    want = train(inputs)
    if case == "diverges":  # step 4: the first step of a call at UNROLL 2, inside one at 3
        assert want.diverged_step == 4
    monkeypatch.setattr(tb, "UNROLL", unroll)
    got = train(inputs)
    assert got.details["steps_per_call"] == unroll
    assert_same_training(got, want)


@pytest.mark.parametrize("case", ["adam-reset", "diverges"])
def test_the_guarded_call_trains_as_the_direct_one(case, monkeypatch):
    inputs = inputs_of(**CASES[case])
    want = train(inputs)
    assert want.details["loop"].endswith("graph called directly")
    monkeypatch.setattr(tb, "_COMPILED", {})
    monkeypatch.setattr(tb, "_SOURCE", tb.re.compile(r"(?!)"))  # no graph input ever matches
    got = train(inputs)
    assert not got.details["loop"].endswith("graph called directly")
    np.testing.assert_array_equal(got.losses, want.losses)
    assert got.diverged_step == want.diverged_step
    for name, value in want.params.items():
        np.testing.assert_array_equal(got.params[name], value)


def test_more_structures_than_dynamos_limit_all_compile(monkeypatch):
    """The compiled-step cache is emptied (and Dynamo reset) before Dynamo's per-function graph
    limit is hit; without that the third structure here would train eagerly with
    FailOnRecompileLimitHit recorded."""
    import torch

    monkeypatch.setattr(tb, "_COMPILED", {})
    monkeypatch.setattr(tb, "RECOMPILE_LIMIT", 3)
    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") \
        else "cache_size_limit"
    backend = tb.TorchBackend(compile=True)
    sgd, adam = {"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 0.01}
    results = []
    torch._dynamo.reset()
    with torch._dynamo.config.patch(**{name: 3}):  # the backend raises it to max(limit, 3)
        for optimizer, dtype in [(sgd, "float64"), (sgd, "float32"), (adam, "float64"),
                                 (sgd, "float64"), (adam, "float32")]:
            got = backend.train(inputs_of(optimizer, dtype=dtype))
            assert got.details["loop"].startswith("compiled"), got.details.get("compile_error")
            assert got.details.get("compile_error") is None
            assert len(tb._COMPILED) <= 2
            results.append(got)
    torch._dynamo.reset()  # the graphs counted under the lowered limit
    # the first structure, compiled again after the cache was emptied, trains identically
    np.testing.assert_array_equal(results[3].losses, results[0].losses)
    for name, value in results[0].params.items():
        np.testing.assert_array_equal(results[3].params[name], value)
