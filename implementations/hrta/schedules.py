"""Per-step schedules of a run (HRTA-SPEC.md sections 4 and 5): s_k, lr_k, stage starts,
optimizer resets and minibatch indices. All are pure functions of the spec (and, for batches,
of a NumPy generator); every backend consumes their output and computes none of its own.
"""

from __future__ import annotations

import math

import numpy as np

from hrta.spec import LRScheduleSpec, RunSpec


def homotopy_s(spec: RunSpec) -> np.ndarray:
    """s_k for k = 0..K-1, float64, shape (K,)."""
    values: list[float] = []
    for stage in spec.homotopy:
        values.extend(stage.s_values())
    return np.asarray(values, dtype=np.float64)


def stage_starts(spec: RunSpec) -> np.ndarray:
    """Global step at which each stage begins, int64, shape (n_stages,)."""
    steps = [stage.steps for stage in spec.homotopy]
    return np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.int64)


def stage_index(spec: RunSpec) -> np.ndarray:
    """Index of the stage that global step k belongs to, int64, shape (K,)."""
    return np.repeat(np.arange(len(spec.homotopy)), [st.steps for st in spec.homotopy])


def reset_mask(spec: RunSpec) -> np.ndarray:
    """bool (K,): True at steps where the optimizer state is re-created before the step.
    Only stage boundaries after the first stage, and only with reset_optimizer_each_stage."""
    mask = np.zeros(spec.total_steps, dtype=bool)
    if spec.reset_optimizer_each_stage:
        mask[stage_starts(spec)[1:]] = True
    return mask


def learning_rates(schedule: LRScheduleSpec, lr0: float, total_steps: int) -> np.ndarray:
    """lr_k for k = 0..K-1 (float64, shape (K,)), the closed forms of spec section 5."""
    k = np.arange(total_steps, dtype=np.float64)
    if schedule.name == "constant":
        return np.full(total_steps, lr0, dtype=np.float64)
    if schedule.name == "step":
        return lr0 * schedule.gamma ** np.floor(k / schedule.step_size)
    if schedule.name == "multistep":
        passed = np.searchsorted(np.asarray(schedule.milestones), k, side="right")
        return lr0 * schedule.gamma ** passed.astype(np.float64)
    if schedule.name == "exponential":
        return lr0 * schedule.gamma ** k
    if schedule.name == "cosine":
        eta = schedule.eta_min
        return eta + (lr0 - eta) * (1 + np.cos(math.pi * k / total_steps)) / 2
    raise ValueError(f"unknown lr schedule {schedule.name!r}")


def batch_indices(n: int, batch_size: int, total_steps: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Minibatch indices, int64, shape (K, B): each epoch is one permutation of range(n) cut into
    floor(n / B) batches of exactly B; a remainder is dropped; epochs follow one another."""
    per_epoch = n // batch_size
    epochs = -(-total_steps // per_epoch)
    rows = []
    for _ in range(epochs):
        perm = rng.permutation(n)
        rows.append(perm[: per_epoch * batch_size].reshape(per_epoch, batch_size))
    return np.concatenate(rows)[:total_steps].astype(np.int64)
