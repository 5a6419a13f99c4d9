"""The infinite-width theory of HRTA-SPEC.md section 8, and the checks built on it.

Everything here is float64 NumPy and framework-neutral. Notation (spec section 8): X (n, d) raw
inputs; x~ = (x, 1) the input augmented with a constant 1 (the bias is part of the first layer);
G = X~ X~^T (n, n); N_ij = |x~_i| |x~_j|; U = G / N, clipped to [-1, 1] against round-off;
c_s = (1 - s/2)^2 and q_s = s^2 / (2 pi).

Closed forms (derived from sigma_s(z) = (1 - s/2) z + (s/2)|z| and
sigma_s'(z) = (1 - s) + s 1[z > 0] with w~ ~ N(0, I_{d+1}), E a^2 = 1):

- derivative kernel  E[sigma_s'(w~.x~_i) sigma_s'(w~.x~_j)] = c_s + q_s arcsin(U)
- first layer  H_s = (c_s + q_s arcsin U) o G          (W and b trained; o = entrywise)
- output layer K_s = c_s G + q_s N o (sqrt(1 - U^2) + U arcsin U)       (a trained)
- the default network's NTK is H_s + K_s. At s = 0 it is exactly 2 G (a linear model: G from W~,
  G from a), of rank <= d + 1; at s = 1 H_1, K_1 are the arc-cosine kernels of degree 0 and 1
  (Cho & Saul): G o (pi - theta) / (2 pi) and N o (sin theta + (pi - theta) cos theta) / (2 pi).

Why lambda_min grows like s^2 (what :func:`s_squared_check` tests). Write the NTK as
M(s) = c_s C + q_s A with C, A positive semi-definite and independent of s (C = 2G for the
default network). Then M(s) / s^2 = (1/s - 1/2)^2 C + A / (2 pi), and (1/s - 1/2)^2 decreases on
(0, 2], so phi(s) = lambda_min(M(s)) / s^2 is non-increasing, from
c_hi = lambda_min(A restricted to null(C)) / (2 pi) as s -> 0 down to c_lo = lambda_min(A) / (2 pi)
at s = 2. When n > rank(C) (n > d + 1 distinct points for the default network) null(C) is not
trivial, lambda_min(M(0)) = 0 and c_lo s^2 <= lambda_min(M(s)) <= c_hi s^2: lambda_min grows like
s^2 exactly up to the factor c_hi / c_lo, and the secant slope of ln lambda_min against ln s
between s1 < s2 lies in [2 - ln(c_hi / c_lo) / ln(s2 / s1), 2].

GD rates. For full-batch gradient descent with step lr_k on L = |r|^2 / (2n) in the lazy regime,
r_{k+1} = (I - lr_k Theta / n) r_k, so the eigencomponent of r along eigenvalue lambda shrinks by
|1 - lr_k lambda / n| per step and the loss L ~ |r|^2 by its square. With a generic residual every
mode is present; the loss ratio per step is a weighted mean of the modes' squared factors, so it
approaches the slowest mode's only asymptotically and is never slower than it: a measured rate
over a finite window is at most the predicted slowest-mode rate (faster contraction), with
equality in the limit. See :func:`measured_rate` for the window rule. At finite width the real
network departs from this linear picture by O(1/sqrt(m)); in particular GD drives
pre-activations onto the kink z = 0, where the Jacobian jumps, which makes the late phase
somewhat slower than predicted (about 10% at width 20 000 on 4 points, see tests/test_theory.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

PARAMETERS = ("W", "b", "a")

# s^2 claim: verdict thresholds on the log-log slope of lambda_min against s (see s_squared_check)
SLOPE_REPRODUCED = 0.2     # |slope - 2| <= 0.2 -> reproduced
SLOPE_REFUTED = 0.5        # |slope - 2| > 0.5 (or lambda_min not increasing) -> not reproduced
ROUNDOFF_REL = 1e-10       # eigenvalues below this fraction of lambda_max count as zero
DEFAULT_S_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
DEFAULT_FIT_RANGE = (0.5, 2.0)


# ---------------------------------------------------------------------------- checks of input


def _check_X(X: np.ndarray, name: str = "X") -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name}: expected a 2-D array (n, d) with n, d >= 1, got shape "
                         f"{X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name}: expected finite values")
    return X


def _check_s(s: float) -> float:
    s = float(s)
    if not 0.0 <= s <= 2.0:
        raise ValueError(f"s: expected a number in [0, 2], got {s!r}")
    return s


def _check_trainable(trainable: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(trainable)
    if not chosen or any(p not in PARAMETERS for p in chosen) or len(set(chosen)) != len(chosen):
        raise ValueError(f"trainable: expected distinct names from {list(PARAMETERS)}, "
                         f"got {list(chosen)}")
    return tuple(p for p in PARAMETERS if p in chosen)


# ---------------------------------------------------------------------------- closed form


def augment(X: np.ndarray) -> np.ndarray:
    """x~ = (x, 1): float64 (n, d + 1)."""
    X = _check_X(X)
    return np.hstack([X, np.ones((X.shape[0], 1))])


@dataclass(frozen=True)
class Geometry:
    """Float64 (n, n) matrices of the augmented inputs: G = X~ X~^T (exactly symmetric),
    N_ij = |x~_i| |x~_j|, U = G / N clipped to [-1, 1]; and Gx = X X^T, the W part of G."""

    G: np.ndarray
    Gx: np.ndarray
    N: np.ndarray
    U: np.ndarray


def geometry(X: np.ndarray) -> Geometry:
    X = _check_X(X)
    Gx = X @ X.T
    Gx = (Gx + Gx.T) / 2
    G = Gx + 1.0
    norms = np.sqrt(np.diag(G))
    N = np.outer(norms, norms)
    U = np.clip(G / N, -1.0, 1.0)
    np.fill_diagonal(U, 1.0)
    return Geometry(G=G, Gx=Gx, N=N, U=U)


def _coefficients(s: float) -> tuple[float, float]:
    """c_s = (1 - s/2)^2 and q_s = s^2 / (2 pi)."""
    s = _check_s(s)
    return (1 - s / 2) ** 2, s * s / (2 * math.pi)


def derivative_kernel(X: np.ndarray, s: float) -> np.ndarray:
    """E[sigma_s'(w~.x~_i) sigma_s'(w~.x~_j)] = c_s + q_s arcsin(U_ij), float64 (n, n)."""
    c, q = _coefficients(s)
    return c + q * np.arcsin(geometry(X).U)


def ntk_first_layer(X: np.ndarray, s: float) -> np.ndarray:
    """H_s = c_s G + q_s G o arcsin(U): the NTK of (W, b) with the output layer frozen,
    float64 (n, n)."""
    geo = geometry(X)
    c, q = _coefficients(s)
    return c * geo.G + q * geo.G * np.arcsin(geo.U)


def ntk_output_layer(X: np.ndarray, s: float) -> np.ndarray:
    """K_s = c_s G + q_s N o (sqrt(1 - U^2) + U arcsin U): the NTK of a alone, float64 (n, n)."""
    geo = geometry(X)
    c, q = _coefficients(s)
    U = geo.U
    return c * geo.G + q * geo.N * (np.sqrt(1 - U * U) + U * np.arcsin(U))


def ntk_infinite(X: np.ndarray, s: float) -> np.ndarray:
    """H_s + K_s: the infinite-width NTK of the default network (W, b, a trained) at raw inputs
    X (n, d), float64 (n, n)."""
    return ntk_first_layer(X, s) + ntk_output_layer(X, s)


def ntk_closed_form(X: np.ndarray, s: float,
                    trainable: Sequence[str] = PARAMETERS) -> np.ndarray:
    """The infinite-width NTK for any set of trained parameters: the derivative kernel times
    X X^T (W) plus the derivative kernel (b) plus K_s (a). Equals ntk_infinite for (W, b, a)
    and ntk_first_layer for (W, b). Float64 (n, n)."""
    trainable = _check_trainable(trainable)
    parts = _split_parts(X, trainable)
    c, q = _coefficients(s)
    return c * parts[0] + q * parts[1]


def _split_parts(X: np.ndarray, trainable: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(C, A) with NTK(s) = c_s C + q_s A for the given trained parameters (both PSD, s-free)."""
    geo = geometry(X)
    asin = np.arcsin(geo.U)
    n = geo.G.shape[0]
    C = np.zeros((n, n))
    A = np.zeros((n, n))
    if "W" in trainable:
        C += geo.Gx
        A += geo.Gx * asin
    if "b" in trainable:
        C += 1.0
        A += asin
    if "a" in trainable:
        C += geo.G
        A += geo.N * (np.sqrt(1 - geo.U * geo.U) + geo.U * asin)
    return C, A


# ---------------------------------------------------------------------------- finite network


def init_params(width: int, dim: int, seed: int, init_a: str = "normal") -> dict[str, np.ndarray]:
    """The initial (W, b, a) a run with this seed, width and input dimension starts from:
    drawn exactly as :func:`hrta.inputs.build_inputs` draws W0, b0, a0. Float64."""
    from hrta.inputs import STREAM_INIT, stream

    if width < 1 or dim < 1:
        raise ValueError(f"width, dim: expected integers >= 1, got {width}, {dim}")
    if init_a not in ("normal", "rademacher"):
        raise ValueError(f"init_a: expected 'normal' or 'rademacher', got {init_a!r}")
    rng = stream(seed, STREAM_INIT)
    W = rng.standard_normal((width, dim))
    b = rng.standard_normal(width)
    a = rng.standard_normal(width) if init_a == "normal" else rng.choice(np.array([-1.0, 1.0]),
                                                                         size=width)
    return {"W": W, "b": b, "a": a}


def _features(params: dict[str, np.ndarray], X: np.ndarray, s: float):
    """z = X W^T + b (n, m), sigma_s(z), sigma_s'(z) and sqrt(m), all float64."""
    from hrta.model import sigma, sigma_prime

    W, b = (np.asarray(params[k], dtype=np.float64) for k in ("W", "b"))
    z = X @ W.T + b
    return z, sigma(z, s), sigma_prime(z, s), math.sqrt(W.shape[0])


def jacobian(params: dict[str, np.ndarray], X: np.ndarray, s: float,
             trainable: Sequence[str] = PARAMETERS) -> np.ndarray:
    """d f_s(x_i) / d theta for the network of spec section 1, float64 (n, P): columns are the
    trainable parameters in the order W (row-major, m * d), b (m), a (m).

    df/dW_rk = a_r sigma_s'(z_ir) x_ik / sqrt(m); df/db_r = a_r sigma_s'(z_ir) / sqrt(m);
    df/da_r = sigma_s(z_ir) / sqrt(m).
    """
    X = _check_X(X)
    trainable = _check_trainable(trainable)
    z, h, dh, root_m = _features(params, X, s)
    a = np.asarray(params["a"], dtype=np.float64)
    D = dh * a / root_m                      # (n, m): d f / d z
    blocks = []
    if "W" in trainable:
        blocks.append((D[:, :, None] * X[:, None, :]).reshape(X.shape[0], -1))
    if "b" in trainable:
        blocks.append(D)
    if "a" in trainable:
        blocks.append(h / root_m)
    return np.hstack(blocks)


def ntk_empirical(params: dict[str, np.ndarray], X: np.ndarray, s: float,
                  trainable: Sequence[str] = PARAMETERS) -> np.ndarray:
    """J J^T of the finite network at ``params`` (float64 (n, n)), without forming J:
    with D = sigma_s'(Z) a / sqrt(m), J_W J_W^T = (D D^T) o X X^T, J_b J_b^T = D D^T and
    J_a J_a^T = sigma_s(Z) sigma_s(Z)^T / m."""
    X = _check_X(X)
    trainable = _check_trainable(trainable)
    z, h, dh, root_m = _features(params, X, s)
    a = np.asarray(params["a"], dtype=np.float64)
    D = dh * a / root_m
    DD = D @ D.T
    out = np.zeros_like(DD)
    if "W" in trainable:
        out += DD * (X @ X.T)
    if "b" in trainable:
        out += DD
    if "a" in trainable:
        out += h @ h.T / root_m**2
    return (out + out.T) / 2


def backend_jacobian(backend, params: dict[str, np.ndarray], X: np.ndarray, s: float,
                     trainable: Sequence[str] = PARAMETERS, dtype: str = "float64") -> np.ndarray:
    """The Jacobian of f_s built only from a backend's public ``loss_and_grad``, float64 (n, P),
    columns ordered as in :func:`jacobian`.

    For one point (B = 1) the loss is (f - y)^2 / 2, so its gradient is (f - y) grad f. The
    gradients at targets y = 0 and y = 1 differ by exactly grad f:
    f grad f - (f - 1) grad f = grad f, whatever f is, with no forward pass and no division.
    Arrays are handed to the backend in ``dtype``; rounding leaves an absolute error of order
    eps(dtype) * (|f| + 1) * |grad f| per entry.
    """
    X = _check_X(X)
    trainable = _check_trainable(trainable)
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
    cast = {k: np.ascontiguousarray(params[k], dtype=dtype) for k in PARAMETERS}
    Xc = np.ascontiguousarray(X, dtype=dtype)
    zero, one = np.zeros(1, dtype=dtype), np.ones(1, dtype=dtype)
    rows = []
    for i in range(X.shape[0]):
        xi = Xc[i:i + 1]
        _, g0 = backend.loss_and_grad(cast, xi, zero, s, trainable)
        _, g1 = backend.loss_and_grad(cast, xi, one, s, trainable)
        rows.append(np.concatenate([np.asarray(g0[k], dtype=np.float64).ravel()
                                    - np.asarray(g1[k], dtype=np.float64).ravel()
                                    for k in trainable]))
    return np.vstack(rows)


def ntk_backend(backend, params: dict[str, np.ndarray], X: np.ndarray, s: float,
                trainable: Sequence[str] = PARAMETERS, dtype: str = "float64") -> np.ndarray:
    """The empirical NTK J J^T with J from the backend's own autodiff (:func:`backend_jacobian`),
    float64 (n, n)."""
    J = backend_jacobian(backend, params, X, s, trainable, dtype)
    K = J @ J.T
    return (K + K.T) / 2


# ---------------------------------------------------------------------------- spectra and rates


@dataclass(frozen=True)
class Spectrum:
    """Extreme eigenvalues of a symmetric PSD kernel and lambda_max / lambda_min (inf when
    lambda_min <= 0)."""

    lambda_min: float
    lambda_max: float
    condition: float


def spectrum(M: np.ndarray) -> Spectrum:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M: expected a square matrix, got shape {M.shape}")
    ev = np.linalg.eigvalsh((M + M.T) / 2)
    lo, hi = float(ev[0]), float(ev[-1])
    return Spectrum(lo, hi, hi / lo if lo > 0 else math.inf)


def predicted_rate(lambda_min: float, lr: float, n: int, lambda_max: float | None = None) -> float:
    """Per-step contraction factor of the residual's slowest mode under full-batch GD on
    L = |r|^2 / (2n): 1 - lr lambda_min / n. With ``lambda_max`` the slowest mode may be the top
    one, and the factor is max(|1 - lr lambda_min / n|, |1 - lr lambda_max / n|) (> 1: divergence).
    The loss contracts by the square of this factor."""
    if n < 1 or lr <= 0:
        raise ValueError(f"lr, n: expected lr > 0 and n >= 1, got {lr}, {n}")
    rate = 1 - lr * lambda_min / n
    if lambda_max is None:
        return rate
    return max(abs(rate), abs(1 - lr * lambda_max / n))


def rate_exponent(rate: float) -> float:
    """kappa = -ln(rate): the residual's decay per step as an exponent (rate = exp(-kappa)).
    Relative comparisons of rates close to 1 are made on kappa, never on the rate itself."""
    return -math.log(rate) if rate > 0 else math.inf


@dataclass(frozen=True)
class MeasuredRate:
    """A fitted late-phase rate. rate: residual contraction per step, exp(slope / 2);
    loss_ratio: loss contraction per step, exp(slope); slope: least-squares slope of ln(loss)
    against step over the window; first_step, last_step, points: the window actually used."""

    rate: float
    loss_ratio: float
    slope: float
    first_step: int
    last_step: int
    points: int


def measured_rate(losses: Sequence[float], steps: Sequence[int],
                  window: tuple[float, float] = (0.5, 1.0),
                  floor_rel: float = 1e-24) -> MeasuredRate:
    """The late-phase per-step contraction factor of the residual, fitted from a loss curve.

    Window rule: first cut the curve before the first point whose loss is not finite or is at
    most floor_rel * L[0] (the curve has reached round-off: 1e-24, a residual shrunk by 1e12,
    suits float64; use about 1e-8 for float32). On what remains, spanning steps [k0, k1], keep
    the points with k0 + window[0] (k1 - k0) <= step <= k0 + window[1] (k1 - k0) (default: the
    second half, the late phase) and fit ln L = alpha + slope * step by least squares on them
    (at least 3). Since L = |r|^2 / (2n), the residual's factor is exp(slope / 2).

    In the lazy regime ln L is a log-sum of decaying exponentials, hence convex in the step: the
    fitted slope lies between the curve's slopes at the window's ends, so the fitted rate is never
    slower than the slowest mode's and approaches it as the window moves later. Raises ValueError
    when fewer than 3 points remain.
    """
    L = np.asarray(losses, dtype=np.float64)
    k = np.asarray(steps, dtype=np.float64)
    if L.ndim != 1 or L.shape != k.shape or L.size < 3:
        raise ValueError(f"losses, steps: expected two 1-D arrays of one length >= 3, got "
                         f"shapes {L.shape}, {k.shape}")
    if np.any(np.diff(k) <= 0):
        raise ValueError("steps: expected strictly increasing steps")
    lo, hi = window
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"window: expected 0 <= lo < hi <= 1, got {window}")
    floor = floor_rel * L[0]
    bad = ~np.isfinite(L) | np.less_equal(L, floor)
    usable = int(np.argmax(bad)) if np.any(bad) else L.size
    k, L = k[:usable], L[:usable]
    if usable < 3:
        raise ValueError(f"loss curve: fewer than 3 points before the loss reaches the floor "
                         f"{floor_rel} * L[0] or a non-finite value")
    span = k[-1] - k[0]
    inside = (k >= k[0] + lo * span - 1e-9) & (k <= k[0] + hi * span + 1e-9)
    if inside.sum() < 3:
        raise ValueError(f"loss curve: fewer than 3 usable points in window {window} "
                         f"(steps {int(k[0])}..{int(k[-1])})")
    kk, ll = k[inside], np.log(L[inside])
    slope = float(np.polyfit(kk, ll, 1)[0])
    return MeasuredRate(rate=math.exp(slope / 2), loss_ratio=math.exp(slope), slope=slope,
                        first_step=int(kk[0]), last_step=int(kk[-1]), points=int(inside.sum()))


def linearized_losses(kernel: np.ndarray, r0: np.ndarray, lr: Sequence[float]) -> np.ndarray:
    """The lazy-regime loss curve: r_{k+1} = (I - lr_k kernel / n) r_k from r_0, and
    L_k = |r_k|^2 / (2n) for k = 0..len(lr). Float64 (len(lr) + 1,)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    r0 = np.asarray(r0, dtype=np.float64)
    n = r0.shape[0]
    lam, V = np.linalg.eigh((kernel + kernel.T) / 2)
    coef = V.T @ r0
    factors = 1 - np.outer(np.asarray(lr, dtype=np.float64), lam) / n      # (K, n)
    cumulative = np.vstack([np.ones(n), np.cumprod(factors, axis=0)])      # (K + 1, n)
    return ((cumulative * coef) ** 2).sum(axis=1) / (2 * n)


# ---------------------------------------------------------------------------- claim (d): s^2


def lambda_min_vs_s(X: np.ndarray, s_grid: Sequence[float] = DEFAULT_S_GRID,
                    trainable: Sequence[str] = PARAMETERS) -> list[dict]:
    """One row per s: s, lambda_min, lambda_max, condition, lambda_min / s^2 (None at s = 0) and
    s2_share, the fraction of lambda_min = v^T M v (v its unit eigenvector) contributed by the
    q_s A term. A share near 1 says the slowest direction lies in null(C), where the kernel is
    exactly q_s A: proportional to s^2."""
    trainable = _check_trainable(trainable)
    C, A = _split_parts(X, trainable)
    rows = []
    for s in s_grid:
        c, q = _coefficients(s)
        M = c * C + q * A
        ev, V = np.linalg.eigh(M)
        v = V[:, 0]
        lam_min, lam_max = float(ev[0]), float(ev[-1])
        share = float(q * v @ A @ v / lam_min) if lam_min > ROUNDOFF_REL * lam_max else None
        rows.append({"s": float(s), "lambda_min": lam_min, "lambda_max": lam_max,
                     "condition": lam_max / lam_min if lam_min > 0 else math.inf,
                     "lambda_min_over_s2": lam_min / (s * s) if s > 0 else None,
                     "s2_share": share})
    return rows


def s_squared_bounds(X: np.ndarray, trainable: Sequence[str] = PARAMETERS) -> dict:
    """c_lo = lambda_min(A) / (2 pi) and c_hi = lambda_min(A on null(C)) / (2 pi), with
    c_lo s^2 <= lambda_min(NTK(s)) <= c_hi s^2 on (0, 2]; null_dim = dim null(C). c_hi is None
    when null(C) is trivial (then lambda_min does not vanish at s = 0)."""
    trainable = _check_trainable(trainable)
    C, A = _split_parts(X, trainable)
    evC, VC = np.linalg.eigh(C)
    null = VC[:, evC <= ROUNDOFF_REL * max(evC[-1], 1.0)]
    c_lo = float(np.linalg.eigvalsh(A)[0]) / (2 * math.pi)
    c_hi = (float(np.linalg.eigvalsh(null.T @ A @ null)[0]) / (2 * math.pi)
            if null.shape[1] else None)
    return {"c_lo": c_lo, "c_hi": c_hi, "null_dim": int(null.shape[1]),
            "rank_C": int(C.shape[0] - null.shape[1])}


def s_squared_verdict(slope: float | None, increasing: bool, premise: bool) -> str:
    """The verdict rule of :func:`s_squared_check` on its three inputs."""
    if not premise or slope is None:
        return "inconclusive"
    if abs(slope - 2) <= SLOPE_REPRODUCED and increasing:
        return "reproduced"
    if abs(slope - 2) > SLOPE_REFUTED or not increasing:
        return "not reproduced"
    return "inconclusive"


def s_squared_check(X: np.ndarray, s_grid: Sequence[float] = DEFAULT_S_GRID,
                    trainable: Sequence[str] = PARAMETERS,
                    fit_range: tuple[float, float] = DEFAULT_FIT_RANGE) -> dict:
    """Claim (d): "lambda_min of the infinite-width NTK grows like s^2 on n > d + 1 points".

    What is checked: the least-squares slope of ln lambda_min against ln s over the grid points
    with s in ``fit_range`` (default [0.5, 2], at least 3 points), and that lambda_min increases
    along the grid. Verdict rule:
    - "inconclusive" when the premise fails: null(C) is trivial (n <= rank C, e.g. n <= d + 1),
      or lambda_min is at round-off level (<= 1e-10 lambda_max) at some fitted s;
    - "reproduced" when |slope - 2| <= 0.2 and lambda_min strictly increases on the grid;
    - "not reproduced" when |slope - 2| > 0.5 or lambda_min does not increase;
    - "inconclusive" otherwise.
    Also returned: the table; the theoretical sandwich c_lo, c_hi; secant_slope, the slope
    between the first and last fitted s (s1, s2), which theory confines to ``slope_bounds`` =
    [2 - ln(c_hi / c_lo) / ln(s2 / s1), 2]; and lambda_min(0) / lambda_max(0) when s = 0 is on
    the grid (0 up to round-off when n > rank C).
    """
    grid = sorted(float(s) for s in s_grid)
    table = lambda_min_vs_s(X, grid, trainable)
    bounds = s_squared_bounds(X, trainable)
    lo_s, hi_s = fit_range
    fitted = [r for r in table if lo_s <= r["s"] <= hi_s and r["s"] > 0]
    if len(fitted) < 3:
        raise ValueError(f"s_grid: expected at least 3 values in {fit_range}, got "
                         f"{[r['s'] for r in fitted]}")
    s_fit = np.array([r["s"] for r in fitted])
    lam_fit = np.array([r["lambda_min"] for r in fitted])
    roundoff = any(r["lambda_min"] <= ROUNDOFF_REL * r["lambda_max"] for r in fitted)
    slope = intercept = None
    if not roundoff:
        slope, intercept = (float(v) for v in np.polyfit(np.log(s_fit), np.log(lam_fit), 1))
    positive = [r for r in table if r["s"] > 0]
    increasing = all(b["lambda_min"] > a["lambda_min"] for a, b in zip(positive, positive[1:],
                                                                         strict=False))
    verdict = s_squared_verdict(slope, increasing, bounds["null_dim"] > 0 and not roundoff)
    zero = next((r for r in table if r["s"] == 0.0), None)
    slope_floor = secant = None
    if bounds["c_hi"] is not None and bounds["c_lo"] > 0:
        slope_floor = 2 - math.log(bounds["c_hi"] / bounds["c_lo"]) / math.log(s_fit[-1] / s_fit[0])
    if not roundoff:
        secant = float(math.log(lam_fit[-1] / lam_fit[0]) / math.log(s_fit[-1] / s_fit[0]))
    return {
        "table": table, "fit_range": [float(lo_s), float(hi_s)], "slope": slope,
        "intercept": intercept, "secant_slope": secant, "increasing": increasing, **bounds,
        "slope_bounds": [slope_floor, 2.0],
        "lambda_min_at_0_rel": (zero["lambda_min"] / zero["lambda_max"]) if zero else None,
        "verdict": verdict,
        "rule": (f"reproduced if |slope - 2| <= {SLOPE_REPRODUCED} (least-squares slope of "
                 f"ln lambda_min vs ln s for s in [{lo_s}, {hi_s}]) and lambda_min increases "
                 f"with s; not reproduced if |slope - 2| > {SLOPE_REFUTED} or it does not "
                 f"increase; inconclusive otherwise or when n <= rank C or lambda_min is at "
                 f"round-off"),
    }


# ---------------------------------------------------------------------------- claim (e): width


def width_convergence(X: np.ndarray, s: float, widths: Sequence[int], seeds: Sequence[int],
                      trainable: Sequence[str] = PARAMETERS, backend=None,
                      dtype: str = "float64", init_a: str = "normal") -> list[dict]:
    """Relative Frobenius error ||J J^T - NTK_inf||_F / ||NTK_inf||_F of the network at
    initialisation (drawn as a run with that seed and width draws it), one row per
    (width, seed): width, seed, rel_error. ``backend`` None uses the analytic Jacobian
    (:func:`ntk_empirical`); a backend object uses its autodiff (:func:`ntk_backend`) in
    ``dtype``."""
    X = _check_X(X)
    trainable = _check_trainable(trainable)
    exact = ntk_closed_form(X, s, trainable)
    norm = np.linalg.norm(exact)
    rows = []
    for width in widths:
        for seed in seeds:
            params = init_params(int(width), X.shape[1], int(seed), init_a)
            if backend is None:
                emp = ntk_empirical(params, X, s, trainable)
            else:
                emp = ntk_backend(backend, params, X, s, trainable, dtype)
            rows.append({"width": int(width), "seed": int(seed),
                         "rel_error": float(np.linalg.norm(emp - exact) / norm)})
    return rows


def width_slope(rows: Sequence[dict]) -> dict:
    """Claim (e), kernel part: does the empirical NTK approach the closed form as width grows?

    Fits ln(error) = alpha + slope ln(width) by least squares: ``slope`` on the root mean square
    of the errors over seeds at each width (theory: -1/2, since J J^T at initialisation is a mean
    of m i.i.d. terms), and one slope per seed, whose Student-t 95% interval is ``ci`` (None
    with fewer than 2 seeds). Verdict rule: "reproduced" when the interval lies below 0 (with
    one seed: slope < 0), "not reproduced" when it lies above 0 (slope > 0), otherwise
    "inconclusive". ``consistent_with_inverse_sqrt``: -1/2 lies inside the interval."""
    from scipy.special import stdtrit  # scipy.stats' t.ppf; scipy.stats takes 0.5 s to import

    widths = np.array(sorted({r["width"] for r in rows}), dtype=np.float64)
    seeds = sorted({r["seed"] for r in rows})
    if widths.size < 2:
        raise ValueError("rows: expected errors at 2 or more widths")
    err = {(r["width"], r["seed"]): r["rel_error"] for r in rows}
    rms = np.array([math.sqrt(np.mean([err[(int(w), sd)] ** 2 for sd in seeds
                                       if (int(w), sd) in err])) for w in widths])
    slope = float(np.polyfit(np.log(widths), np.log(rms), 1)[0])
    per_seed = []
    for sd in seeds:
        pts = [(w, err[(int(w), sd)]) for w in widths if (int(w), sd) in err]
        if len(pts) >= 2:
            ws, es = np.array(pts).T
            per_seed.append(float(np.polyfit(np.log(ws), np.log(es), 1)[0]))
    ci = None
    if len(per_seed) >= 2:
        mean = float(np.mean(per_seed))
        sem = float(np.std(per_seed, ddof=1) / math.sqrt(len(per_seed)))
        half = float(stdtrit(len(per_seed) - 1, 0.975)) * sem
        ci = [mean - half, mean + half]
    upper, lower = (ci[1], ci[0]) if ci else (slope, slope)
    verdict = ("reproduced" if upper < 0 else "not reproduced" if lower > 0 else "inconclusive")
    return {"widths": widths.astype(int).tolist(), "rms_error": rms.tolist(), "slope": slope,
            "per_seed_slopes": per_seed, "ci": ci, "verdict": verdict,
            "consistent_with_inverse_sqrt": bool(ci is not None and ci[0] <= -0.5 <= ci[1]),
            "rule": "reproduced if the 95% t-interval of the per-seed log-log slopes of the "
                    "relative error against width lies below 0, not reproduced if above 0, "
                    "inconclusive otherwise"}


# ---------------------------------------------------------------------------- rates per stage


def constant_segments(s_steps: np.ndarray, lr_steps: np.ndarray | None = None,
                      min_steps: int = 2) -> list[tuple[int, int]]:
    """Maximal runs [k0, k1) of global steps with one s (and one lr when given), at least
    ``min_steps`` long; ramps, whose s changes every step, yield none."""
    s_steps = np.asarray(s_steps)
    change = np.diff(s_steps) != 0
    if lr_steps is not None:
        change |= np.diff(np.asarray(lr_steps)) != 0
    edges = [0, *(np.flatnonzero(change) + 1).tolist(), len(s_steps)]
    return [(k0, k1) for k0, k1 in zip(edges, edges[1:], strict=False) if k1 - k0 >= min_steps]


def stage_rates(steps: Sequence[int], losses: Sequence[float], s_steps: Sequence[float],
                lr_steps: Sequence[float], X: np.ndarray,
                trainable: Sequence[str] = PARAMETERS,
                kernel: Callable[[float], np.ndarray] | None = None,
                window: tuple[float, float] = (0.5, 1.0), floor_rel: float = 1e-24,
                min_points: int = 3) -> list[dict]:
    """Predicted against measured GD rates on every constant-s, constant-lr segment of a run.

    Valid for plain full-batch gradient descent (sgd, momentum 0, batch_size null). ``steps``,
    ``losses``: the logged history (loss at step k computed with s_k; the last row, step K, with
    s_{K-1}); ``s_steps``, ``lr_steps``: s_k and lr_k for k = 0..K-1 (inputs.npz). A segment
    [k0, k1) uses the logged steps k0 <= k < k1, and k1 itself when k1 = K. Its prediction is
    :func:`predicted_rate` with lambda_min and lambda_max of ``kernel(s)`` (default: the closed
    form for ``trainable``); the measurement is :func:`measured_rate` with ``window``.

    Rows: k0, k1, s, lr, lambda_min, lambda_max, predicted_rate, measured_rate, kappa_predicted,
    kappa_measured (= -ln rate), kappa_ratio = measured / predicted (>= 1 expected in the lazy
    regime: the slowest mode is approached from the faster side), window_first, window_last;
    measured entries are None with ``note`` when the segment has too few usable points.
    """
    X = _check_X(X)
    trainable = _check_trainable(trainable)
    steps = np.asarray(steps, dtype=np.int64)
    losses = np.asarray(losses, dtype=np.float64)
    s_steps = np.asarray(s_steps, dtype=np.float64)
    lr_steps = np.asarray(lr_steps, dtype=np.float64)
    K, n = len(s_steps), X.shape[0]
    if kernel is None:
        def kernel(s):
            return ntk_closed_form(X, s, trainable)
    rows = []
    for k0, k1 in constant_segments(s_steps, lr_steps):
        s, lr = float(s_steps[k0]), float(lr_steps[k0])
        keep = (steps >= k0) & ((steps < k1) | ((steps == K) & (k1 == K)))
        spec = spectrum(kernel(s))
        pred = predicted_rate(spec.lambda_min, lr, n, spec.lambda_max)
        row = {"k0": int(k0), "k1": int(k1), "s": s, "lr": lr, "lambda_min": spec.lambda_min,
               "lambda_max": spec.lambda_max, "predicted_rate": pred,
               "kappa_predicted": rate_exponent(pred), "measured_rate": None,
               "kappa_measured": None, "kappa_ratio": None, "window_first": None,
               "window_last": None, "note": ""}
        if keep.sum() >= min_points:
            try:
                got = measured_rate(losses[keep], steps[keep], window, floor_rel)
            except ValueError as err:
                row["note"] = str(err)
            else:
                kappa = rate_exponent(got.rate)
                row.update(measured_rate=got.rate, kappa_measured=kappa,
                           kappa_ratio=kappa / row["kappa_predicted"]
                           if row["kappa_predicted"] > 0 else None,
                           window_first=got.first_step, window_last=got.last_step)
        else:
            row["note"] = f"only {int(keep.sum())} logged points in steps {k0}..{k1}"
        rows.append(row)
    return rows


def run_stage_rates(run, window: tuple[float, float] = (0.5, 1.0)) -> list[dict]:
    """:func:`stage_rates` for a run folder read by :func:`hrta.run.read_run`; the loss floor
    follows the run's dtype (1e-24 for float64, 1e-8 for float32). Raises ValueError for runs
    that are not plain full-batch GD."""
    spec = run.inputs.spec
    if (spec.optimizer.name != "sgd" or spec.optimizer.momentum != 0
            or spec.batch_size is not None):
        raise ValueError("run: rate predictions hold for plain full-batch GD only (optimizer sgd, "
                         "momentum 0, batch_size null)")
    floor = 1e-24 if spec.dtype == "float64" else 1e-8
    return stage_rates(run.history["step"], run.history["train_loss"], run.inputs.s,
                       run.inputs.lr, run.inputs.X_train, spec.model.train, window=window,
                       floor_rel=floor)


# ---------------------------------------------------------------------------- tasks and the CLI


def task_train_inputs(task: str, n_train: int = 100, seed: int = 0) -> np.ndarray:
    """X_train (n_train, d), float64, exactly as a run of ``task`` with this seed trains on."""
    from hrta.inputs import STREAM_NOISE, STREAM_TEST_X, STREAM_TRAIN_X, stream
    from hrta.tasks import TASKS, sample_task

    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(sorted(TASKS))}, got {task!r}")
    if n_train < 1:
        raise ValueError(f"n_train: expected an integer >= 1, got {n_train}")
    data = sample_task(TASKS[task], n_train, 1, 0.0, stream(seed, STREAM_TRAIN_X),
                       stream(seed, STREAM_TEST_X), stream(seed, STREAM_NOISE))
    return data.X_train


def task_theory(task: str, s_values: Sequence[float], n_train: int = 100, seed: int = 0,
                trainable: Sequence[str] = PARAMETERS) -> dict:
    """The closed-form NTK's spectrum per s on a task's training inputs (what ``hrta theory``
    prints), plus the s^2 check when at least 3 of the s values lie in [0.5, 2]."""
    for s in s_values:
        _check_s(s)
    X = task_train_inputs(task, n_train, seed)
    trainable = _check_trainable(trainable)
    out = {"task": task, "n_train": n_train, "seed": seed, "dim": int(X.shape[1]),
           "trainable": list(trainable),
           "rows": lambda_min_vs_s(X, list(s_values), trainable), "s_squared": None}
    if sum(DEFAULT_FIT_RANGE[0] <= s <= DEFAULT_FIT_RANGE[1] and s > 0 for s in s_values) >= 3:
        check = s_squared_check(X, s_values, trainable)
        out["s_squared"] = {k: v for k, v in check.items() if k != "table"}
    return out


def json_safe(value):
    """``value`` with every non-finite float replaced by None (strict JSON has no inf/nan)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_task_theory(result: dict) -> str:
    """A plain-text table of :func:`task_theory`'s result."""
    lines = [f"closed-form NTK ({' + '.join(result['trainable'])} trained) on "
             f"{result['task']}: n = {result['n_train']}, d = {result['dim']}, "
             f"seed {result['seed']}",
             f"{'s':>6} {'lambda_min':>12} {'lambda_max':>12} {'condition':>12}"]
    for r in result["rows"]:
        lines.append(f"{r['s']:6.3f} {r['lambda_min']:12.5e} {r['lambda_max']:12.5e} "
                     f"{r['condition']:12.5e}")
    check = result["s_squared"]
    if check is not None:
        slope = "n/a" if check["slope"] is None else f"{check['slope']:.4f}"
        lines.append(f"lambda_min vs s^2: log-log slope on {check['fit_range']} = {slope}; "
                     f"verdict: {check['verdict']}")
    return "\n".join(lines)


__all__ = ["PARAMETERS", "Geometry", "MeasuredRate", "Spectrum", "augment",
           "backend_jacobian", "constant_segments", "derivative_kernel", "format_task_theory",
           "geometry", "init_params", "jacobian", "json_safe", "lambda_min_vs_s",
           "linearized_losses", "measured_rate", "ntk_backend", "ntk_closed_form",
           "ntk_empirical", "ntk_first_layer", "ntk_infinite", "ntk_output_layer",
           "predicted_rate", "rate_exponent", "run_stage_rates", "s_squared_bounds",
           "s_squared_check", "s_squared_verdict", "spectrum", "stage_rates", "task_theory",
           "task_train_inputs", "width_convergence", "width_slope"]
