"""``numpy-einsum``: a second, independently written NumPy backend, registered as a plugin.

It shares no arithmetic with the reference (``hrta.model`` and ``hrta.optim``): the network,
its gradients and the optimizers are written out here again with ``np.einsum`` (which sums in
its own loops, not through BLAS, so its rounding differs from the reference's matmuls), the
activation is a ``where`` rather than the spec's (1 - s) z + s relu(z), and the optimizer state
is updated in place. It exists to show what a third-party backend implements and that the
conformance suite tests it without any change to the suite.

Shapes: X (n, d); W (m, d); b (m,); a (m,); f, y (n,). All arithmetic is in the dtype of the
arrays handed in (the run's float32 or float64).
"""

from __future__ import annotations

import time

import numpy as np

from hrta.backends.base import Backend, TrainResult


def _activation(z: np.ndarray, s) -> tuple[np.ndarray, np.ndarray]:
    """sigma_s(z) and sigma_s'(z): z and 1 where z > 0, (1 - s) z and 1 - s elsewhere."""
    positive = z > 0
    one = z.dtype.type(1)
    slope = np.where(positive, one, one - z.dtype.type(s))
    return slope * z, slope


def _network(W, b, a, X, s):
    """z = X W^T + b (n, m), the activations and slopes (n, m), and f (n,)."""
    z = np.einsum("nd,md->nm", X, W) + b
    act, slope = _activation(z, s)
    scale = X.dtype.type(1) / np.sqrt(X.dtype.type(W.shape[0]))
    return act, slope, np.einsum("nm,m->n", act, a) * scale, scale


def _loss(W, b, a, X, y, s):
    """L_s = mean((f - y)^2) / 2, a scalar of the arrays' dtype."""
    r = _network(W, b, a, X, s)[2] - y
    return np.einsum("n,n->", r, r) / X.dtype.type(2 * X.shape[0])


def _gradients(W, b, a, X, y, s, trainable):
    """(L_s, {name: dL/dname}) for the names in ``trainable``; chain rule written out."""
    act, slope, f, scale = _network(W, b, a, X, s)
    r = f - y
    value = np.einsum("n,n->", r, r) / X.dtype.type(2 * X.shape[0])
    c = r / X.dtype.type(X.shape[0])  # dL/df, (n,)
    grads = {}
    if "a" in trainable:
        grads["a"] = np.einsum("nm,n->m", act, c) * scale
    if "W" in trainable or "b" in trainable:
        dz = np.einsum("n,m,nm->nm", c, a * scale, slope)  # dL/dz, (n, m)
        if "W" in trainable:
            grads["W"] = np.einsum("nm,nd->md", dz, X)
        if "b" in trainable:
            grads["b"] = np.einsum("nm->m", dz)
    return value, grads


class _Sgd:
    """SGD in PyTorch's convention, state kept in place: buf = mu buf + g; step = buf, or
    g + mu buf with Nesterov."""

    def __init__(self, params, momentum, nesterov):
        self.mu, self.nesterov = momentum, nesterov
        self.buf = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads, lr):
        for key, g in grads.items():
            if self.mu == 0.0:
                direction = g
            else:
                mu = g.dtype.type(self.mu)
                self.buf[key] *= mu
                self.buf[key] += g
                direction = g + mu * self.buf[key] if self.nesterov else self.buf[key]
            params[key] = params[key] - g.dtype.type(lr) * direction


class _Adam:
    """Adam with bias correction and eps added after the square root, state kept in place."""

    def __init__(self, params, betas, eps):
        self.b1, self.b2 = betas
        self.eps = eps
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params, grads, lr):
        self.t += 1
        for key, g in grads.items():
            dt = g.dtype.type
            b1, b2 = dt(self.b1), dt(self.b2)
            self.m[key] *= b1
            self.m[key] += (1 - b1) * g
            self.v[key] *= b2
            self.v[key] += (1 - b2) * (g * g)
            m_hat = self.m[key] / (1 - b1 ** self.t)
            v_hat = self.v[key] / (1 - b2 ** self.t)
            params[key] = params[key] - dt(lr) * m_hat / (np.sqrt(v_hat) + dt(self.eps))


def _make_optimizer(spec, params):
    if spec.name == "sgd":
        return _Sgd(params, spec.momentum, spec.nesterov)
    if spec.name == "adam":
        return _Adam(params, spec.betas, spec.eps)
    raise ValueError(f"optimizer.name: expected sgd or adam, got {spec.name!r}")


class EinsumBackend(Backend):
    """The plugin's backend class; its entry point is ``numpy-einsum``."""

    name = "numpy-einsum"
    framework = "numpy"
    install_hint = "pip install -e examples/hrta-backend-example"
    description = "example plugin: independent NumPy implementation with np.einsum"

    def forward(self, params, X, s):
        return _network(params["W"], params["b"], params["a"], X, s)[2]

    def loss_and_grad(self, params, X, y, s, trainable):
        value, grads = _gradients(params["W"], params["b"], params["a"], X, y, s, trainable)
        return float(value), grads

    def train(self, inputs, progress=None):
        spec = inputs.spec
        trainable = spec.model.train
        steps = spec.total_steps
        params = {"W": inputs.W0.copy(), "b": inputs.b0.copy(), "a": inputs.a0.copy()}
        X, y = inputs.X_train, inputs.y_train
        reset = inputs.reset
        optimizer = _make_optimizer(spec.optimizer, {k: params[k] for k in trainable})
        losses = []
        diverged = None
        start = time.perf_counter()
        with np.errstate(all="ignore"):  # overflow is detected below, not warned about
            for k in range(steps + 1):
                s_k = inputs.s[min(k, steps - 1)]
                value = _loss(params["W"], params["b"], params["a"], X, y, s_k)
                losses.append(float(value))
                if not (np.isfinite(value) and all(np.isfinite(v).all()
                                                   for v in params.values())):
                    diverged = k
                    break
                if k == steps:
                    break
                if reset[k]:
                    optimizer = _make_optimizer(spec.optimizer,
                                                {key: params[key] for key in trainable})
                rows = slice(None) if inputs.batches is None else inputs.batches[k]
                _, grads = _gradients(params["W"], params["b"], params["a"], X[rows], y[rows],
                                      s_k, trainable)
                optimizer.step(params, grads, inputs.lr[k])
                if progress is not None and (k + 1) % 100 == 0:
                    progress(k + 1)
        seconds = time.perf_counter() - start
        if progress is not None:
            progress(len(losses) - 1)
        return TrainResult(losses=np.asarray(losses, dtype=np.float64), params=params,
                           diverged_step=diverged, compile_seconds=0.0, train_seconds=seconds,
                           device="cpu", details={"loop": "python", "gradients": "np.einsum, "
                                                  "hand-derived", "optimizer": "in place"})
