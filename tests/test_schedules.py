"""Per-step schedules (hrta.schedules): s_k of the homotopy stages, stage boundaries, the
optimizer-reset mask, closed-form learning rates and the minibatch index sequence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hrta import schedules
from hrta.spec import LRScheduleSpec, parse_spec


def _spec(homotopy, **extra):
    return parse_spec({"task": {"name": "sin1d", "n_train": 20}, "homotopy": homotopy,
                       "optimizer": {"name": "sgd", "lr": 0.1}, **extra})


STAGE = st.one_of(
    st.builds(lambda s, n: {"s": s, "steps": n}, st.floats(0, 2), st.integers(1, 30)),
    st.builds(lambda a, b, n: {"s_from": a, "s_to": b, "steps": n},
              st.floats(0, 2), st.floats(0, 2), st.integers(1, 30)),
)


def test_homotopy_s_worked_example():
    spec = _spec([{"s": 0.5, "steps": 2}, {"s_from": 0.5, "s_to": 1.0, "steps": 3},
                  {"s": 1.0, "steps": 2}, {"s_from": 2.0, "s_to": 0.0, "steps": 5},
                  {"s_from": 0.3, "s_to": 1.7, "steps": 1}])
    expected = [0.5, 0.5, 0.5, 0.75, 1.0, 1.0, 1.0, 2.0, 1.5, 1.0, 0.5, 0.0, 0.3]
    np.testing.assert_array_equal(schedules.homotopy_s(spec), expected)
    assert spec.total_steps == 13
    np.testing.assert_array_equal(schedules.stage_starts(spec), [0, 2, 5, 7, 12])
    np.testing.assert_array_equal(schedules.stage_index(spec),
                                  [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 4])


@settings(max_examples=60, deadline=None)
@given(stages=st.lists(STAGE, min_size=1, max_size=5), reset=st.booleans())
def test_stages_ramps_and_reset_mask(stages, reset):
    spec = _spec(stages, reset_optimizer_each_stage=reset)
    s = schedules.homotopy_s(spec)
    K = sum(st_["steps"] for st_ in stages)
    assert spec.total_steps == K
    assert s.shape == (K,) and s.dtype == np.float64
    starts = schedules.stage_starts(spec)
    index = schedules.stage_index(spec)
    assert starts.shape == (len(stages),) and starts[0] == 0
    assert index.shape == (K,)
    mask = schedules.reset_mask(spec)
    assert mask.shape == (K,) and mask.dtype == bool
    # reset exactly at the stage boundaries after the first, and only when asked
    assert set(np.flatnonzero(mask)) == (set(starts[1:].tolist()) if reset else set())
    for i, stage in enumerate(stages):
        T = stage["steps"]
        lo = int(starts[i])
        assert lo == sum(x["steps"] for x in stages[:i])
        np.testing.assert_array_equal(index[lo:lo + T], i)
        local = s[lo:lo + T]
        if "s" in stage:
            np.testing.assert_array_equal(local, stage["s"])
            continue
        a, b = stage["s_from"], stage["s_to"]
        assert local[0] == a  # ramp starts exactly at s_from
        if T == 1:
            continue  # a one-step ramp uses s_from (spec section 4)
        # ramp ends at s_to up to the rounding of a + (b - a)
        assert math.isclose(local[-1], b, rel_tol=0, abs_tol=1e-15)
        j = np.arange(T)
        np.testing.assert_allclose(local, a + (b - a) * j / (T - 1), rtol=0, atol=1e-15)
        steps = np.diff(local)  # equal increments: linear in j
        np.testing.assert_allclose(steps, (b - a) / (T - 1), rtol=0, atol=1e-14)
        assert np.all(local >= min(a, b) - 1e-15) and np.all(local <= max(a, b) + 1e-15)


def test_reset_mask_is_all_false_for_a_single_stage():
    spec = _spec([{"s": 1.0, "steps": 9}], reset_optimizer_each_stage=True)
    assert not schedules.reset_mask(spec).any()


# ---------------------------------------------------------------------------- learning rates


@pytest.mark.parametrize(("schedule", "expected"), [
    (LRScheduleSpec("constant"), [0.2] * 6),
    (LRScheduleSpec("step", step_size=2, gamma=0.5), [0.2, 0.2, 0.1, 0.1, 0.05, 0.05]),
    (LRScheduleSpec("multistep", milestones=(1, 4), gamma=0.1), [0.2, 0.02, 0.02, 0.02, 0.002,
                                                                   0.002]),
    (LRScheduleSpec("exponential", gamma=0.5), [0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625]),
    (LRScheduleSpec("cosine", eta_min=0.0),
     [0.2 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)]),
    (LRScheduleSpec("cosine", eta_min=0.05),
     [0.05 + 0.15 * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)]),
], ids=["constant", "step", "multistep", "exponential", "cosine", "cosine-eta_min"])
def test_learning_rates_closed_forms(schedule, expected):
    np.testing.assert_allclose(schedules.learning_rates(schedule, 0.2, 6), expected,
                               rtol=1e-15, atol=1e-17)


def test_cosine_uses_t_max_equal_to_the_total_steps():
    lr = schedules.learning_rates(LRScheduleSpec("cosine", eta_min=0.0), 1.0, 4)
    # k = K/2 is half way: lr0 / 2; k = K would be eta_min (not reached: k < K)
    assert lr[2] == pytest.approx(0.5, abs=1e-15)
    assert lr[-1] > 0


# ---------------------------------------------------------------------------- minibatches


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), data=st.data(), K=st.integers(1, 60), seed=st.integers(0, 2**31))
def test_batch_indices_one_permutation_per_epoch(n, data, K, seed):
    B = data.draw(st.integers(1, n), label="B")
    idx = schedules.batch_indices(n, B, K, np.random.default_rng(seed))
    assert idx.shape == (K, B) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < n
    per_epoch = n // B
    for start in range(0, K, per_epoch):
        epoch = idx[start:start + per_epoch].ravel()
        # within an epoch no index repeats: the rows are disjoint slices of one permutation
        assert len(np.unique(epoch)) == epoch.size
        if start + per_epoch <= K:  # a complete epoch covers floor(n / B) * B distinct indices
            assert epoch.size == per_epoch * B


def test_batch_indices_are_the_seeded_permutations_cut_in_order():
    n, B, K = 10, 3, 7  # 3 batches per epoch, index 1 of each permutation's tail dropped
    idx = schedules.batch_indices(n, B, K, np.random.default_rng(42))
    rng = np.random.default_rng(42)
    first, second, third = rng.permutation(n), rng.permutation(n), rng.permutation(n)
    expected = np.concatenate([first[:9].reshape(3, 3), second[:9].reshape(3, 3),
                               third[:9].reshape(3, 3)])[:K]
    np.testing.assert_array_equal(idx, expected)


def test_batch_indices_same_seed_same_indices_different_seed_different():
    a = schedules.batch_indices(50, 7, 40, np.random.default_rng(3))
    b = schedules.batch_indices(50, 7, 40, np.random.default_rng(3))
    c = schedules.batch_indices(50, 7, 40, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_full_epoch_batch_is_a_permutation_of_everything():
    idx = schedules.batch_indices(12, 12, 3, np.random.default_rng(0))
    for row in idx:
        np.testing.assert_array_equal(np.sort(row), np.arange(12))
    assert not all(np.array_equal(idx[0], row) for row in idx[1:])  # reshuffled each epoch
