"""The reference model (hrta.model): the homotopy activation sigma_s, the forward pass and the
hand-derived gradients, held against central finite differences and against torch autograd.

Finite differences are only meaningful where the loss is smooth. The loss is a polynomial in
the parameters on every cell where the sign pattern of z = X W^T + b is fixed; it has a kink
wherever some z_ir crosses 0. A central difference of half-width h moves z_ir by at most
h * max(1, |x_i|_inf) (entry W_rj moves z_ir by h x_ij, b_r by h, a_r not at all), so each
hypothesis example is required to keep every |z_ir| above ten times that: then both probe
points lie in the same cell and the difference quotient has only O(h^2) truncation error.
The kink itself (z = 0 exactly) is checked separately: there the spec fixes
sigma_s'(0) = 1 - s (relu'(0) = 0), which is compared with torch autograd.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hrta import model

S_VALUES = st.floats(min_value=0.0, max_value=2.0, allow_nan=False)


# ---------------------------------------------------------------------------- sigma_s


@settings(deadline=None)
@given(s=S_VALUES, seed=st.integers(0, 2**32 - 1))
def test_sigma_is_linear_with_slope_one_on_the_right_and_one_minus_s_on_the_left(s, seed):
    z = np.random.default_rng(seed).normal(scale=3.0, size=50)
    pos, neg = z[z > 0], z[z < 0]
    np.testing.assert_allclose(model.sigma(pos, s), pos, rtol=2e-15, atol=0)
    np.testing.assert_allclose(model.sigma(neg, s), (1 - s) * neg, rtol=1e-14, atol=1e-15)
    assert model.sigma(np.zeros(3), s).tolist() == [0.0, 0.0, 0.0]


def test_sigma_special_cases():
    z = np.linspace(-3.0, 3.0, 601)  # includes 0 exactly
    np.testing.assert_array_equal(model.sigma(z, 0.0), z)                  # identity
    np.testing.assert_array_equal(model.sigma(z, 1.0), np.maximum(z, 0))   # ReLU
    np.testing.assert_array_equal(model.sigma(z, 2.0), np.abs(z))          # |z|
    # 1 < s < 2: the "relaxation", negative side has slope 1 - s < 0
    np.testing.assert_allclose(model.sigma(np.array([-2.0, 2.0]), 1.5), [1.0, 2.0], rtol=1e-15)


@settings(deadline=None)
@given(s=S_VALUES)
def test_sigma_prime_values_including_the_kink(s):
    z = np.array([-2.0, -1e-300, 0.0, 1e-300, 2.0])
    np.testing.assert_array_equal(model.sigma_prime(z, s), [1 - s, 1 - s, 1 - s, 1.0, 1.0])


@settings(deadline=None)
@given(s=S_VALUES, seed=st.integers(0, 2**32 - 1))
def test_sigma_prime_is_the_slope_of_sigma_away_from_zero(s, seed):
    z = np.random.default_rng(seed).normal(size=40)
    z = z[np.abs(z) > 1e-3]
    h = 1e-6
    slope = (model.sigma(z + h, s) - model.sigma(z - h, s)) / (2 * h)
    np.testing.assert_allclose(model.sigma_prime(z, s), slope, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigma_keeps_the_dtype(dtype):
    z = np.linspace(-1, 1, 5).astype(dtype)
    assert model.sigma(z, 0.7).dtype == dtype
    assert model.sigma_prime(z, 0.7).dtype == dtype


# ---------------------------------------------------------------------------- forward and loss


def _problem(seed: int, n: int, d: int, m: int, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((m, d)), "b": rng.standard_normal(m),
              "a": rng.standard_normal(m)}
    X = rng.uniform(-1.0, 1.0, size=(n, d))
    y = rng.standard_normal(n)
    cast = {k: v.astype(dtype) for k, v in params.items()}
    return cast, X.astype(dtype), y.astype(dtype)


def _loop_forward(params, X, s):
    """f_s by the definition of spec section 1, one unit at a time (independent of model.py)."""
    m = params["W"].shape[0]
    out = np.zeros(X.shape[0])
    for i, x in enumerate(X):
        total = 0.0
        for r in range(m):
            z = float(params["W"][r] @ x + params["b"][r])
            total += params["a"][r] * ((1 - s) * z + s * max(z, 0.0))
        out[i] = total / np.sqrt(m)
    return out


@settings(deadline=None)
@given(seed=st.integers(0, 2**32 - 1), s=S_VALUES, n=st.integers(1, 6), d=st.integers(1, 4),
       m=st.integers(1, 7))
def test_forward_and_loss_match_the_definition(seed, s, n, d, m):
    params, X, y = _problem(seed, n, d, m)
    f = model.forward(params, X, s)
    assert f.shape == (n,)
    np.testing.assert_allclose(f, _loop_forward(params, X, s), rtol=1e-12, atol=1e-12)
    expected = np.sum((f - y) ** 2) / (2 * n)
    np.testing.assert_allclose(model.loss(params, X, y, s), expected, rtol=1e-13)
    value, _ = model.loss_and_grad(params, X, y, s)
    np.testing.assert_allclose(value, expected, rtol=1e-13)


def test_test_metrics_formulas():
    params, X, y = _problem(3, 20, 2, 5)
    r = model.forward(params, X, 0.8) - y
    got = model.test_metrics(params, X, y, 0.8)
    np.testing.assert_allclose(got["test_mse"], np.mean(r**2), rtol=1e-14)
    np.testing.assert_allclose(got["test_rel_l2"], np.sqrt(np.sum(r**2) / np.sum(y**2)),
                               rtol=1e-14)


# ---------------------------------------------------------------------------- gradients


def _central_differences(params, X, y, s, trainable, h):
    """Central difference quotients of model.loss, in float64, entry by entry."""
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    grads = {}
    for key in trainable:
        g = np.zeros_like(p64[key])
        for idx in np.ndindex(g.shape):
            plus = {k: v.copy() for k, v in p64.items()}
            minus = {k: v.copy() for k, v in p64.items()}
            plus[key][idx] += h
            minus[key][idx] -= h
            g[idx] = (model.loss(plus, X64, y64, s) - model.loss(minus, X64, y64, s)) / (2 * h)
        grads[key] = g
    return grads


def _margin_ok(params, X, h) -> bool:
    z = X.astype(np.float64) @ params["W"].astype(np.float64).T + params["b"].astype(np.float64)
    reach = h * max(1.0, float(np.max(np.abs(X))))
    return bool(np.min(np.abs(z)) > 10 * reach)


TRAINABLE = st.sampled_from([("W", "b", "a"), ("W", "b"), ("a",), ("W",), ("b", "a")])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), s=S_VALUES, n=st.integers(1, 5), d=st.integers(1, 3),
       m=st.integers(1, 6), trainable=TRAINABLE)
def test_float64_gradient_matches_central_differences(seed, s, n, d, m, trainable):
    params, X, y = _problem(seed, n, d, m)
    h = 1e-6
    assume(_margin_ok(params, X, h))
    value, grads = model.loss_and_grad(params, X, y, s, trainable)
    assert set(grads) == set(trainable)
    fd = _central_differences(params, X, y, s, trainable, h)
    for key in trainable:
        assert grads[key].shape == params[key].shape
        assert grads[key].dtype == np.float64
        # truncation O(h^2) is ~1e-12 here; the rounding error of the quotient is
        # ~ eps * L / h ~ 1e-10 * L, hence the tolerance (relative to the loss scale).
        scale = 1.0 + float(value)
        np.testing.assert_allclose(grads[key], fd[key], rtol=1e-6, atol=1e-8 * scale,
                                   err_msg=f"gradient of {key}")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), s=S_VALUES, n=st.integers(1, 5), d=st.integers(1, 3),
       m=st.integers(1, 6))
def test_float32_gradient_matches_central_differences(seed, s, n, d, m):
    """The float32 gradient is computed in float32 (dtype kept throughout) and compared with
    central differences taken in float64 at the very same float32 point: finite differences in
    float32 itself would be swamped by cancellation (eps32 / h). Tolerance: float32 round-off of
    a handful of operations on O(1) values, a few 1e-6 relative, with headroom."""
    params, X, y = _problem(seed, n, d, m, dtype=np.float32)
    h = 1e-6
    assume(_margin_ok(params, X, h))
    value, grads = model.loss_and_grad(params, X, y, s)
    assert np.asarray(value).dtype == np.float32
    fd = _central_differences(params, X, y, s, ("W", "b", "a"), h)
    for key in ("W", "b", "a"):
        assert grads[key].dtype == np.float32
        scale = 1.0 + float(value)
        np.testing.assert_allclose(grads[key], fd[key], rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=f"gradient of {key}")


def _torch_loss_and_grad(params, X, y, s):
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    Xt, yt = torch.tensor(X), torch.tensor(y)
    z = Xt @ t["W"].T + t["b"]
    h = (1 - s) * z + s * torch.relu(z)
    f = h @ t["a"] / np.sqrt(params["W"].shape[0])
    loss = ((f - yt) ** 2).sum() / (2 * X.shape[0])
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in t.items()}


@pytest.mark.parametrize("s", [0.0, 0.3, 1.0, 1.5, 2.0])
def test_gradient_at_the_kink_follows_relu_prime_zero_like_torch(s):
    """Rows with z = 0 exactly (x = 0 and b = 0): the spec's sigma_s'(0) = 1 - s."""
    rng = np.random.default_rng(7)
    params = {"W": rng.standard_normal((4, 2)), "b": np.array([0.0, 0.0, 0.5, -0.5]),
              "a": rng.standard_normal(4)}
    X = np.array([[0.0, 0.0], [0.3, -0.2], [0.0, 0.0]])
    y = np.array([0.1, -0.4, 0.7])
    z = X @ params["W"].T + params["b"]
    assert np.sum(z == 0) >= 2
    value, grads = model.loss_and_grad(params, X, y, s)
    t_value, t_grads = _torch_loss_and_grad(params, X, y, s)
    np.testing.assert_allclose(value, t_value, rtol=1e-14)
    for key in ("W", "b", "a"):
        np.testing.assert_allclose(grads[key], t_grads[key], rtol=1e-12, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), s=S_VALUES, n=st.integers(1, 8), d=st.integers(1, 5),
       m=st.integers(1, 16))
def test_gradient_matches_torch_autograd(seed, s, n, d, m):
    params, X, y = _problem(seed, n, d, m)
    value, grads = model.loss_and_grad(params, X, y, s)
    t_value, t_grads = _torch_loss_and_grad(params, X, y, s)
    np.testing.assert_allclose(value, t_value, rtol=1e-12)
    for key in ("W", "b", "a"):
        np.testing.assert_allclose(grads[key], t_grads[key], rtol=1e-10, atol=1e-13)
