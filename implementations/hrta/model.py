"""The two-layer homotopy network of HRTA-SPEC.md sections 1-3 in NumPy, with hand-derived
gradients. This is the ground truth that every framework backend is held against.

Shapes: X (n, d); W (m, d); b (m,); a (m,); outputs and targets (n,). All arithmetic happens in
the dtype of the arrays passed in (float64 for the reference, float32 when a run asks for it).
"""

from __future__ import annotations

import numpy as np


def sigma(z: np.ndarray, s: float) -> np.ndarray:
    """sigma_s(z) = (1 - s) z + s relu(z)."""
    s = z.dtype.type(s)
    return (1 - s) * z + s * np.maximum(z, 0)


def sigma_prime(z: np.ndarray, s: float) -> np.ndarray:
    """sigma_s'(z): 1 for z > 0, 1 - s for z <= 0 (relu'(0) = 0, as in every framework)."""
    s = z.dtype.type(s)
    return np.where(z > 0, z.dtype.type(1), 1 - s)


def forward(params: dict[str, np.ndarray], X: np.ndarray, s: float) -> np.ndarray:
    """f_s(X) = sigma_s(X W^T + b) a / sqrt(m), shape (n,)."""
    W, b, a = params["W"], params["b"], params["a"]
    z = X @ W.T + b
    return sigma(z, s) @ a / np.sqrt(W.dtype.type(W.shape[0]))


def loss(params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray, s: float) -> float:
    """L_s = sum (f_s(x_i) - y_i)^2 / (2 B) over the B rows of X."""
    r = forward(params, X, s) - y
    return r @ r / (2 * X.shape[0])


def loss_and_grad(params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray, s: float,
                  trainable: tuple[str, ...] = ("W", "b", "a"),
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """L_s on (X, y) and its gradient with respect to the ``trainable`` parameters.

    With z = X W^T + b, h = sigma_s(z), f = h a / sqrt(m), r = f - y and g = r / B:
    dL/da = h^T g / sqrt(m); dL/dz = (g a^T / sqrt(m)) * sigma_s'(z); dL/dW = (dL/dz)^T X;
    dL/db = column sums of dL/dz.
    """
    W, b, a = params["W"], params["b"], params["a"]
    root_m = np.sqrt(W.dtype.type(W.shape[0]))
    z = X @ W.T + b
    h = sigma(z, s)
    r = h @ a / root_m - y
    value = r @ r / (2 * X.shape[0])
    g = r / X.shape[0]
    grads: dict[str, np.ndarray] = {}
    if "a" in trainable:
        grads["a"] = h.T @ g / root_m
    if "W" in trainable or "b" in trainable:
        dz = np.outer(g, a / root_m) * sigma_prime(z, s)
        if "W" in trainable:
            grads["W"] = dz.T @ X
        if "b" in trainable:
            grads["b"] = dz.sum(axis=0)
    return value, grads


def test_metrics(params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray,
                 s: float) -> dict[str, float]:
    """test_mse = mean (f - y)^2 and test_rel_l2 = ||f - y|| / ||y|| (spec section 3)."""
    r = forward(params, X, s) - y
    return {"test_mse": float(np.mean(r * r)),
            "test_rel_l2": float(np.linalg.norm(r) / np.linalg.norm(y))}
