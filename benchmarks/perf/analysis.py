"""The pure parts of the performance harness: the cost of one training step, the machine
limit it implies, a least-squares line, and target checks. No timing, no frameworks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OPTIMIZER_FLOPS_PER_PARAM = {"sgd": 2, "adam": 14}
"""Floating-point operations per trained parameter of one optimizer step (spec section 5).
sgd with momentum 0: theta - lr g (a product and a difference). adam: m (2 products, 1 sum),
v (3 products, 1 sum), the two bias corrections (1 division each), sqrt, + eps, the division,
the product with lr and the difference: 14."""

OPTIMIZER_STATE_ARRAYS = {"sgd": 0, "adam": 2}
"""Arrays of optimizer state per trained parameter (sgd with momentum 0 keeps none)."""


@dataclass(frozen=True)
class StepCost:
    """What one full-batch training step must compute and move: ``flops`` (floating-point
    operations) and ``bytes`` (compulsory memory traffic), for the record of the formula."""

    flops: int
    bytes: int
    model_flops: int
    optimizer_flops: int
    params: int


def step_cost(n: int, m: int, d: int, optimizer: str, itemsize: int) -> StepCost:
    """FLOPs and bytes of one full-batch step of the two-layer network (W, b, a all trained).

    n samples, width m, input dimension d, P = m (d + 2) trained parameters, ``itemsize`` bytes
    per number (8 for float64, 4 for float32). Following hrta.model.loss_and_grad:

    forward   z = X W^T + b                      2nmd + nm
              h = (1 - s) z + s relu(z)          4nm  (relu, two products, a sum)
              f = h a / sqrt(m)                  2nm + n
              r = f - y, L = r.r / (2n)          3n
    backward  g = r / n                          n
              dL/da = h^T g / sqrt(m)            2nm + m
              dz = (g a^T / sqrt(m)) * sigma'(z) 3nm + m  (outer product, sigma', product)
              dL/dW = dz^T X                     2nmd
              dL/db = column sums of dz          nm
    optimizer OPTIMIZER_FLOPS_PER_PARAM * P

    model FLOPs = 4nmd + 13nm + 5n + 2m.

    Bytes: the compulsory traffic only, itemsize * (nd + n + 2P + 2 S P): read X and y, read
    and write the parameters, read and write the S state arrays of the optimizer (S = 0 for
    GD, 2 for Adam). The n x m intermediates (z, h, dz) are not counted: a fused step never
    has to store them (for d = 1 recomputing z from X, W, b is cheaper than storing it), and at
    the reference size they fit in cache.
    """
    if optimizer not in OPTIMIZER_FLOPS_PER_PARAM:
        raise ValueError(f"optimizer: expected sgd or adam, got {optimizer!r}")
    params = m * (d + 2)
    model_flops = 4 * n * m * d + 13 * n * m + 5 * n + 2 * m
    optimizer_flops = OPTIMIZER_FLOPS_PER_PARAM[optimizer] * params
    state = OPTIMIZER_STATE_ARRAYS[optimizer]
    moved = itemsize * (n * d + n + 2 * params + 2 * state * params)
    return StepCost(flops=model_flops + optimizer_flops, bytes=moved, model_flops=model_flops,
                    optimizer_flops=optimizer_flops, params=params)


def limit_seconds(cost: StepCost, peak_flops: float, bandwidth: float) -> float:
    """The machine's limit for one step: max(flops / peak FLOP rate, bytes / bandwidth), with
    rates in FLOP/s and bytes/s."""
    return max(cost.flops / peak_flops, cost.bytes / bandwidth)


@dataclass(frozen=True)
class LinearFit:
    """y = intercept + slope x by least squares; ``r2`` the coefficient of determination and
    ``max_rel_dev`` the largest |y - fit| / fit over the points."""

    slope: float
    intercept: float
    r2: float
    max_rel_dev: float


def linear_fit(x, y) -> LinearFit:
    """Least-squares line through at least two points (x need not be sorted)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size < 2 or np.ptp(x) == 0:
        raise ValueError("linear_fit: expected two or more points with distinct x")
    slope, intercept = np.polyfit(x, y, 1)
    fit = intercept + slope * x
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - fit) ** 2)) / total if total > 0 else 1.0
    max_rel_dev = float(np.max(np.abs(y - fit) / np.abs(fit)))
    return LinearFit(float(slope), float(intercept), r2, max_rel_dev)


OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


@dataclass
class Target:
    """One ratio or time against its target: ``met`` is ``value op threshold``; ``note`` says
    what was measured, and why where it is missed. A value of None (not measured) is not met."""

    name: str
    value: float | None
    op: str
    threshold: float
    note: str = ""

    @property
    def met(self) -> bool:
        if self.value is None or not math.isfinite(self.value):
            return False
        return OPS[self.op](self.value, self.threshold)

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "op": self.op,
                "threshold": self.threshold, "met": self.met, "note": self.note}


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)
