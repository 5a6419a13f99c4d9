"""Optimizers of HRTA-SPEC.md section 5 as pure NumPy (init, update) pairs, in the style of
optax: all state is explicit, nothing is mutated. The learning rate is an argument of
``update`` because every backend consumes the precomputed lr_k of the run's inputs.

These are the reference's update rules; tests hold them step by step against torch.optim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hrta.spec import OptimizerSpec

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Optimizer:
    """``init(params) -> state``; ``update(grads, state, params, lr) -> (new_params, state)``."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params, float], tuple[Params, Any]]


def sgd(momentum: float = 0.0, nesterov: bool = False) -> Optimizer:
    """PyTorch's SGD: v <- mu v + g; theta <- theta - lr v (nesterov: theta - lr (g + mu v))."""

    def init(params: Params) -> Params:
        return {k: np.zeros_like(v) for k, v in params.items()}

    def update(grads: Params, state: Params, params: Params, lr: float):
        new_params, new_state = {}, {}
        for key, g in grads.items():
            dt = g.dtype.type
            if momentum == 0.0:
                step, velocity = g, state[key]
            else:
                velocity = dt(momentum) * state[key] + g
                step = g + dt(momentum) * velocity if nesterov else velocity
            new_params[key] = params[key] - dt(lr) * step
            new_state[key] = velocity
        return new_params, new_state

    return Optimizer(init, update)


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam with bias correction and eps outside the square root (torch.optim.Adam, optax.adam)."""

    def init(params: Params):
        zeros = {k: np.zeros_like(v) for k, v in params.items()}
        return {"t": 0, "m": zeros, "v": {k: z.copy() for k, z in zeros.items()}}

    def update(grads: Params, state, params: Params, lr: float):
        t = state["t"] + 1
        new_params, new_m, new_v = {}, {}, {}
        for key, g in grads.items():
            dt = g.dtype.type
            m = dt(b1) * state["m"][key] + (1 - dt(b1)) * g
            v = dt(b2) * state["v"][key] + (1 - dt(b2)) * g * g
            m_hat = m / (1 - dt(b1) ** t)
            v_hat = v / (1 - dt(b2) ** t)
            new_params[key] = params[key] - dt(lr) * m_hat / (np.sqrt(v_hat) + dt(eps))
            new_m[key], new_v[key] = m, v
        return new_params, {"t": t, "m": new_m, "v": new_v}

    return Optimizer(init, update)


def from_spec(spec: OptimizerSpec) -> Optimizer:
    if spec.name == "sgd":
        return sgd(spec.momentum, spec.nesterov)
    if spec.name == "adam":
        return adam(spec.betas[0], spec.betas[1], spec.eps)
    raise ValueError(f"unknown optimizer {spec.name!r}")
