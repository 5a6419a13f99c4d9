"""Agreement tolerances: the one place where the suite says how close two backends must be.

Every check of one backend against another (``hrta compare``, the conformance suite, the
pipeline's agreement stage) takes its tolerance from here. Each tolerance is derived from the
arithmetic of the computation it bounds, in units of the dtype's machine epsilon ``eps``
(2.2e-16 for float64, 1.19e-7 for float32):

* A sum of N floating-point terms, evaluated in any order, is off by at most
  gamma_N ~ N * eps relative to the sum of the magnitudes of its terms (Higham, *Accuracy and
  Stability of Numerical Algorithms*, section 3.1). Two implementations of the same formula that
  sum in different orders (BLAS blocking, einsum loops, XLA fusion, FMA) therefore differ by at
  most about N * eps, the length of the longest chain of sums they evaluate. The chains here:
  the hidden pre-activation z = w . x + b sums d + 1 terms, f sums the m hidden units, the
  loss and every gradient sum over the n points of a batch: N = n + m + d + 2 for a loss or a
  gradient, m + d + 2 for the forward pass. Rounding errors of independent operations add up
  like a random walk, so the real deviation is nearer sqrt(N) * eps; the bound N * eps leaves
  that much head room, and no more.
* A training step applies its gradient error to the parameters and adds one more rounding of
  its own. In the stable (non-expansive) regime that every check here runs in, these
  per-step perturbations are carried forward without growth, so after K steps they add up to at
  most about K * eps on top of the N * eps of a single evaluation: ``(N + K) * eps``.

Measured with ``hrta conformance --backend NAME --measure`` on this project's 2-core x86_64
CPU, at the suite's sizes (m = 64, n = 64, d = 1 or 5): the largest deviation from the NumPy
reference over every case, in units of eps, for numpy-einsum (the example plugin), torch, jax
and tensorflow (the full table is in docs/adding-a-backend.md):

* forward 0.5-2, gradients 2-2.3, one step 0.3-1.7 (bounds 67, 131, 132);
* float32 train_loss after 24 steps 2.8-12 (bound 155), after 300 steps 3.9-8.4 (bound 431);
  final parameters 1.2-2.5 after 24 steps and 29 after 300 steps (bounds 155 and 431);
* float64 train_loss and parameters, 24 or 300 steps: at most 4.3 eps (1e-15), against the
  floor 1e-9.

So the float32 bounds sit 13-60x above the worst measured deviation. The subtlest formula
fault we know of, Keras' Adam ("epsilon hat", eps added before the bias correction), moves the
float64 loss by 4e-7 relative after one step (caught at step 1 by the 1e-9 floor) and the
float32 loss by 1.7e-3 after 300 steps (caught by the 300-step float32 bound), but only by
1.5e-6 within 24 float32 steps (not caught there): float32 checks guard the float32 code path;
formula faults are caught in float64 (``tests/test_conformance_checks.py`` shows both).

Where the bound stops holding: when the dynamics amplify perturbations (a lr near the
stability limit, or Adam late in training, whose update g / sqrt(v) turns rounding noise of
small gradient entries into unit-sized steps), deviations grow exponentially rather than
linearly in K. Measured: Adam (lr 0.01) in float32 is 3e-7 off after 300 steps but 2e-3 after
1000; in float64 the same run stays within 5e-15. Compare long float32 Adam runs with an
explicit ``--rtol`` (and say so), or in float64.

The pipeline's agreement stage (:mod:`hrta.agreement`) therefore gives a float32 run that
exceeds the bound a second, measured chance: its own spec's rounding noise, the deviation of the
float32 reference from the float64 reference, times :data:`ROUNDING_NOISE_FACTOR`.

float64 train_loss and parameters additionally have the floor ``FLOAT64_TARGET = 1e-9``, the
project's agreement contract (issue 3): an arithmetic bound of 1e-13 would reject legitimate
float64 implementations for sub-1e-9 differences that mean nothing for the study, while 1e-9 is
still far below what the formula faults above produce. Measured float64 deviation at 300
steps: 1e-15 or less for every backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FLOAT64_TARGET = 1e-9
"""Relative agreement every float64 train_loss and parameter vector must reach (issue 3)."""

ROUNDING_NOISE_FACTOR = 2.0
"""A float32 run b agrees with the float32 reference r within rounding noise when
|b - r| <= 2 |r - x|, x the float64 reference of the same spec: if b is as accurate as r
(|b - x| ~ |r - x|), the triangle inequality gives |b - r| <= |b - x| + |x - r| ~ 2 |r - x|."""

FLOORS = {"float64": FLOAT64_TARGET, "float32": 0.0}
"""Lower bound of the training tolerances per dtype (see the module docstring)."""


@dataclass(frozen=True)
class Tolerance:
    """Allowed deviation of ``got`` from ``ref``: ``|got - ref| <= atol + rtol * |ref|``.

    For a vector the norms are 2-norms (normwise relative error): elementwise relative errors of
    entries near zero say nothing about a computation's accuracy. ``basis`` is the one-line
    derivation, recorded with every comparison.
    """

    name: str
    rtol: float
    atol: float = 0.0
    basis: str = ""

    def allowed(self, ref: float | np.ndarray) -> float | np.ndarray:
        """The largest allowed |got - ref| (elementwise for an array of references)."""
        return self.atol + self.rtol * np.abs(ref)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, rtol: float | None = None, atol: float | None = None) -> Tolerance:
        """The same tolerance with a user-chosen rtol or atol (``basis`` records it)."""
        if rtol is None and atol is None:
            return self
        return Tolerance(self.name, self.rtol if rtol is None else rtol,
                         self.atol if atol is None else atol, "set by the user")


def eps(dtype: str | np.dtype) -> float:
    """Machine epsilon of a float dtype (2**-52 for float64, 2**-23 for float32)."""
    return float(np.finfo(np.dtype(dtype)).eps)


def _sum_lengths(n: int, width: int, dim: int) -> int:
    """N = n + m + d + 2: the longest chain of sums behind a loss or a gradient (d + 1 for
    z, m for f, n over the batch; +1 each for the division and the final rounding)."""
    return n + width + dim + 2


def forward(dtype: str, width: int, dim: int) -> Tolerance:
    """f_s(X) of one backend vs the reference at the same parameters, normwise:
    rtol = (m + d + 2) eps (z sums d + 1 terms, f sums m)."""
    n_sums = width + dim + 2
    return Tolerance("forward", n_sums * eps(dtype),
                     basis=f"(m + d + 2) eps = {n_sums} * eps({dtype})")


def gradient(dtype: str, n: int, width: int, dim: int) -> Tolerance:
    """dL/dW, dL/db, dL/da and L itself vs the reference's hand-derived ones, normwise per
    array: rtol = (n + m + d + 2) eps (the forward pass, then sums over the n points)."""
    n_sums = _sum_lengths(n, width, dim)
    return Tolerance("gradient", n_sums * eps(dtype),
                     basis=f"(n + m + d + 2) eps = {n_sums} * eps({dtype})")


def one_step(dtype: str, n: int, width: int, dim: int) -> Tolerance:
    """Parameters after one optimizer step, normwise: the gradient's error scaled by
    lr |g| / |theta| (< 1 in every stable step) plus the update's own rounding:
    rtol = (n + m + d + 3) eps."""
    n_sums = _sum_lengths(n, width, dim) + 1
    return Tolerance("one_step", n_sums * eps(dtype),
                     basis=f"(n + m + d + 3) eps = {n_sums} * eps({dtype})")


def train_loss(dtype: str, steps: int, n: int, width: int, dim: int) -> Tolerance:
    """Every logged train_loss of a K-step run, relative to the reference's:
    rtol = max(floor, (n + m + d + 2 + K) eps), floor 1e-9 in float64 (see the module
    docstring for the derivation and where it stops holding)."""
    n_sums = _sum_lengths(n, width, dim) + steps
    rtol = max(FLOORS[dtype], n_sums * eps(dtype))
    basis = f"max({FLOORS[dtype]:g}, (n + m + d + 2 + K) eps = {n_sums} * eps({dtype}))"
    return Tolerance("train_loss", rtol, basis=basis)


def params(dtype: str, steps: int, n: int, width: int, dim: int) -> Tolerance:
    """Final W, b, a of a K-step run, normwise per array: the same accumulation as train_loss,
    rtol = max(floor, (n + m + d + 2 + K) eps)."""
    n_sums = _sum_lengths(n, width, dim) + steps
    rtol = max(FLOORS[dtype], n_sums * eps(dtype))
    basis = f"max({FLOORS[dtype]:g}, (n + m + d + 2 + K) eps = {n_sums} * eps({dtype}))"
    return Tolerance("params", rtol, basis=basis)


def _sizes(spec) -> tuple[int, int, int]:
    """(n, m, d) of a spec: n is the training-set size, because the logged loss sums the full
    training set (a minibatch gradient sums fewer terms)."""
    from hrta.tasks import TASKS

    return spec.task.n_train, spec.model.width, TASKS[spec.task.name].dim


def for_run(spec) -> tuple[Tolerance, Tolerance]:
    """The default (train_loss, params) tolerances of a run spec, by its dtype and sizes."""
    n, width, dim = _sizes(spec)
    steps = spec.total_steps
    return (train_loss(spec.dtype, steps, n, width, dim),
            params(spec.dtype, steps, n, width, dim))


def for_inputs_check(spec) -> dict[str, Tolerance]:
    """Tolerances of the single-evaluation checks (forward, gradient, one step) for a spec."""
    n, width, dim = _sizes(spec)
    return {"forward": forward(spec.dtype, width, dim),
            "gradient": gradient(spec.dtype, n, width, dim),
            "one_step": one_step(spec.dtype, n, width, dim)}
