"""The PyTorch backend: torch.autograd gradients, torch.optim optimizers, a torch.compile'd model.

What is native torch and what is not (docs/backends.md says the same):

- model and loss: torch tensor ops in the run's dtype, compiled with ``torch.compile``
  (inductor, ``fullgraph=True, dynamic=False``); eager when compilation is switched off
  (``HRTA_TORCH_COMPILE=0`` or ``TorchBackend(compile=False)``) or fails, which ``details``
  records.
- gradients: torch.autograd (the AOTAutograd backward graph when compiled).
- optimizers: ``torch.optim.SGD`` (momentum, nesterov: PyTorch's convention is the spec's) and
  ``torch.optim.Adam`` (eps outside the square root, as the spec), ``fused=True``.
- learning rates: lr_k comes precomputed in the inputs (one schedule for every backend) and is
  written into ``param_group["lr"]`` before each step; the closed forms of
  :mod:`hrta.schedules` are what ``torch.optim.lr_scheduler`` computes, which the test suite
  checks. s_k, batch indices and the optimizer-reset mask also come from the inputs.
- hand-written: only the loop (chunks of ``CHUNK`` steps, losses collected as tensors and
  checked for finiteness once per chunk, replayed step by step from a snapshot to find the
  exact divergence step when a chunk contains one).

torch is imported inside the methods, so this module imports without torch installed.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time

import numpy as np

from hrta.backends.base import Backend, Params, Progress, TrainResult
from hrta.inputs import Inputs

CHUNK = 100
"""Steps between finiteness checks, snapshots and progress reports."""

RECOMPILE_LIMIT = 64
"""torch._dynamo's per-function graph limit while training (default 8): one process may train
many dtype x trainable-set x batch-shape combinations, and each is its own static graph."""

COMPILE_ENV = "HRTA_TORCH_COMPILE"
"""Set to 0 to train eagerly (no torch.compile)."""

THREADS_ENV = "HRTA_TORCH_THREADS"
"""torch intra-op threads while training (default 1). The ops of a width-1000, n=100 network
are a few microseconds each, far below what a thread team repays, and on a shared machine an
OpenMP team waits for a descheduled thread for milliseconds per op (measured: a fused SGD step
of 400 numbers took 55 ms with 2 threads on a loaded 2-core host, 47 us with 1)."""


def _threads() -> int:
    value = os.environ.get(THREADS_ENV, "1").strip()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV}: expected a positive integer, got {value!r}")
    return int(value)


def _torch():
    import torch

    return torch


def _forward(W, b, a, X, s, root_m):
    """f_s(X) = sigma_s(X W^T + b) a / sqrt(m), shape (B,) (spec sections 1-2).

    W (m, d), b (m,), a (m,), X (B, d), s and root_m = sqrt(m) 0-d tensors, all in the run's
    dtype. Tensor methods only (torch is not imported at module level), in the reference's
    order of operations (hrta.model); relu'(0) = 0, so sigma_s'(0) = 1 - s as the spec says.
    """
    z = X @ W.T + b
    h = (1 - s) * z + s * z.relu()
    return h @ a / root_m


def _loss(W, b, a, X, y, s, root_m):
    """L_s = sum (f_s(x_i) - y_i)^2 / (2 B) on the B rows of X and y (B,); a 0-d tensor."""
    r = _forward(W, b, a, X, s, root_m) - y
    return r @ r / (2 * X.shape[0])


@functools.cache
def _compiled_loss():
    """The compiled ``_loss`` (one wrapper per process, so that its graphs are reused)."""
    return _torch().compile(_loss, fullgraph=True, dynamic=False)


@contextlib.contextmanager
def _settings():
    """Deterministic, full-precision settings for the duration of a call; yields a record of
    them. Restores the caller's settings afterwards."""
    torch = _torch()
    import torch.utils.deterministic as deterministic

    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             deterministic.fill_uninitialized_memory,
             torch.get_float32_matmul_precision(),
             torch.get_num_threads())
    threads = _threads()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    deterministic.fill_uninitialized_memory = False  # nothing reads uninitialised memory
    torch.set_float32_matmul_precision("highest")  # no TF32/bf16 shortcuts in float32 matmuls
    try:
        yield {"use_deterministic_algorithms": True,
               "fill_uninitialized_memory": False,
               "float32_matmul_precision": "highest",
               "num_threads": threads,
               "flush_denormal": False}
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        deterministic.fill_uninitialized_memory = saved[2]
        torch.set_float32_matmul_precision(saved[3])
        if torch.get_num_threads() != saved[4]:
            torch.set_num_threads(saved[4])


class _Trainer:
    """The state of one training run: parameters, optimizer and the per-step inputs as tensors.

    ``grad_step(k)`` evaluates the full-training-set loss at theta_k (and the gradient on the
    step's batch); ``update(k)`` applies optimizer step k. Both are deterministic, so a chunk
    replayed from a snapshot reproduces the same numbers bit for bit.
    """

    def __init__(self, inputs: Inputs, loss_fn):
        torch = _torch()
        spec = inputs.spec
        self.torch, self.spec, self.loss_fn = torch, spec, loss_fn
        self.dtype = getattr(torch, spec.dtype)

        def tensor(array):
            return torch.from_numpy(np.array(array, dtype=spec.dtype, copy=True))

        self.X, self.y = tensor(inputs.X_train), tensor(inputs.y_train)
        self.params = {"W": tensor(inputs.W0), "b": tensor(inputs.b0), "a": tensor(inputs.a0)}
        for name in spec.model.train:
            self.params[name].requires_grad_(True)
        self.trainable = [self.params[name] for name in spec.model.train]
        self.root_m = torch.sqrt(torch.tensor(float(inputs.W0.shape[0]), dtype=self.dtype))
        self.s = list(tensor(inputs.s).unbind())  # 0-d tensors: no recompile as s changes
        self.lr = np.asarray(inputs.lr, dtype=np.float64).tolist()
        self.reset = np.asarray(inputs.reset, dtype=bool).tolist()
        self.batches = (None if inputs.batches is None
                        else list(torch.from_numpy(np.array(inputs.batches, dtype=np.int64))
                                  .unbind()))
        self.optimizer = self.new_optimizer(self.trainable)

    # ---- the optimizer ------------------------------------------------------------------
    def new_optimizer(self, params):
        opt = self.spec.optimizer
        if opt.name == "sgd":
            return self.torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum,
                                        nesterov=opt.nesterov, fused=True)
        return self.torch.optim.Adam(params, lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                     fused=True)

    def optimizer_description(self) -> str:
        opt = self.spec.optimizer
        if opt.name == "sgd":
            return (f"torch.optim.SGD(momentum={opt.momentum}, nesterov={opt.nesterov}, "
                    f"dampening=0, weight_decay=0, fused=True)")
        return (f"torch.optim.Adam(betas={tuple(opt.betas)}, eps={opt.eps}, amsgrad=False, "
                f"weight_decay=0, fused=True)")

    # ---- one step -----------------------------------------------------------------------
    def _call(self, X, y, s):
        p = self.params
        return self.loss_fn(p["W"], p["b"], p["a"], X, y, s, self.root_m)

    def grad_step(self, k: int):
        """Full-set L_{s_k}(theta_k) (0-d tensor) and the gradient of step k in ``.grad``."""
        s = self.s[k]
        if self.batches is None:  # the full-batch gradient comes with the loss
            loss = self._call(self.X, self.y, s)
            loss.backward()
            return loss.detach()
        with self.torch.no_grad():
            loss = self._call(self.X, self.y, s)
        idx = self.batches[k]
        self._call(self.X.index_select(0, idx), self.y.index_select(0, idx), s).backward()
        return loss

    def update(self, k: int) -> None:
        """Optimizer step k with lr_k (re-creating the optimizer first at reset steps)."""
        if self.reset[k]:
            self.optimizer = self.new_optimizer(self.trainable)
        self.optimizer.param_groups[0]["lr"] = self.lr[k]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def final_loss(self):
        """L_{s_{K-1}}(theta_K), through the same graph as the training steps' losses."""
        s = self.s[-1]
        if self.batches is None:
            return self._call(self.X, self.y, s).detach()
        with self.torch.no_grad():
            return self._call(self.X, self.y, s)

    # ---- finiteness and snapshots -------------------------------------------------------
    def params_finite(self) -> bool:
        torch = self.torch
        return bool(torch.stack([torch.isfinite(p).all() for p in self.params.values()]).all())

    def snapshot(self):
        state = {p: {key: (v.clone() if self.torch.is_tensor(v) else v) for key, v in st.items()}
                 for p, st in self.optimizer.state.items()}
        return ({k: p.detach().clone() for k, p in self.params.items()}, self.optimizer, state)

    def restore(self, snap) -> None:
        params, optimizer, state = snap
        with self.torch.no_grad():
            for key, value in params.items():
                self.params[key].copy_(value)
        for p in self.trainable:
            p.grad = None
        optimizer.state.clear()
        optimizer.state.update({p: {key: (v.clone() if self.torch.is_tensor(v) else v)
                                    for key, v in st.items()} for p, st in state.items()})
        self.optimizer = optimizer

    def numpy_params(self) -> Params:
        return {k: p.detach().numpy().copy() for k, p in self.params.items()}

    # ---- warm-up ------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run every graph the training will use once, on copies of the parameters and a
        throw-away optimizer, so that tracing and compilation happen here. The run's own
        parameters and optimizer are not touched."""
        torch = self.torch
        copies = {k: p.detach().clone().requires_grad_(p.requires_grad)
                  for k, p in self.params.items()}
        trainable = [copies[name] for name in self.spec.model.train]

        def call(X, y):
            return self.loss_fn(copies["W"], copies["b"], copies["a"], X, y, self.s[0],
                                self.root_m)

        if self.batches is None:
            loss = call(self.X, self.y)
        else:
            with torch.no_grad():
                call(self.X, self.y)
            idx = self.batches[0]
            loss = call(self.X.index_select(0, idx), self.y.index_select(0, idx))
        grads = torch.autograd.grad(loss, trainable)
        for p, g in zip(trainable, grads, strict=True):
            p.grad = g
        optimizer = self.new_optimizer(trainable)
        optimizer.param_groups[0]["lr"] = self.lr[0]
        optimizer.step()


class TorchBackend(Backend):
    name = "torch"
    framework = "torch"
    install_hint = "pip install 'hrta-bench[torch]'"
    description = "PyTorch: autograd, torch.optim (fused), torch.compile'd model"

    def __init__(self, compile: bool | None = None):
        """``compile``: use torch.compile (default: on unless HRTA_TORCH_COMPILE=0)."""
        if compile is None:
            compile = os.environ.get(COMPILE_ENV, "1").strip().lower() not in ("0", "false",
                                                                               "no", "off")
        self.compile = compile

    def versions(self) -> dict[str, str]:
        torch = _torch()
        return {**super().versions(), "torch": torch.__version__}

    # ---- single evaluations (eager) -----------------------------------------------------
    def _tensors(self, params: Params, X: np.ndarray, s: float,
                 trainable: tuple[str, ...] = ()):
        torch = _torch()
        dtype = X.dtype
        p = {k: torch.from_numpy(np.array(params[k], dtype=dtype, copy=True))
             for k in ("W", "b", "a")}
        for k in trainable:
            p[k].requires_grad_(True)
        root_m = torch.sqrt(torch.tensor(float(p["W"].shape[0]), dtype=p["W"].dtype))
        s_t = torch.tensor(dtype.type(s), dtype=p["W"].dtype)
        return p, torch.from_numpy(np.array(X, copy=True)), s_t, root_m

    def forward(self, params: Params, X: np.ndarray, s: float) -> np.ndarray:
        """f_s(X), shape (n,), in the dtype of X."""
        torch = _torch()
        with _settings(), torch.no_grad():
            p, x, s_t, root_m = self._tensors(params, X, s)
            return _forward(p["W"], p["b"], p["a"], x, s_t, root_m).numpy().copy()

    def loss_and_grad(self, params: Params, X: np.ndarray, y: np.ndarray, s: float,
                      trainable: tuple[str, ...]) -> tuple[float, Params]:
        """L_s on (X, y) and its torch.autograd gradient with respect to ``trainable``."""
        torch = _torch()
        with _settings():
            p, x, s_t, root_m = self._tensors(params, X, s, trainable)
            y_t = torch.from_numpy(np.array(y, dtype=X.dtype, copy=True))
            loss = _loss(p["W"], p["b"], p["a"], x, y_t, s_t, root_m)
            grads = torch.autograd.grad(loss, [p[k] for k in trainable]) if trainable else ()
            return float(loss.detach()), {k: g.numpy().copy() for k, g in zip(trainable, grads,
                                                                      strict=True)}

    # ---- training -----------------------------------------------------------------------
    def train(self, inputs: Inputs, progress: Progress | None = None) -> TrainResult:
        torch = _torch()
        with _settings() as settings, _dynamo_limits(torch):
            trainer, compile_seconds, loop, compile_error = self._prepare(inputs)
            start = time.perf_counter()
            losses, diverged = _run(trainer, inputs.spec.total_steps, progress)
            train_seconds = time.perf_counter() - start
            params = trainer.numpy_params()
        details = {
            "loop": loop,
            "steps_per_check": CHUNK,
            "native": {
                "model_and_loss": "torch tensor ops" + (" under torch.compile (inductor)"
                                                        if loop.startswith("compiled") else ""),
                "gradients": "torch.autograd" + (" (AOTAutograd backward graph)"
                                                 if loop.startswith("compiled") else ""),
                "optimizer": trainer.optimizer_description(),
                "optimizer_reset": "a new torch.optim optimizer at each reset step",
            },
            "from_inputs": {
                "lr": "lr_k precomputed by hrta.schedules (the torch.optim.lr_scheduler closed "
                      "forms, checked against them by the test suite), set as "
                      "param_group['lr'] before each step",
                "s": "s_k as a 0-d tensor per step",
                "batches": "shared index array, torch.index_select per step",
            },
            "handwritten": "the training loop: losses kept as tensors, finiteness checked "
                           f"every {CHUNK} steps, a chunk with a non-finite value replayed "
                           "step by step from its snapshot to find the divergence step",
            "determinism": settings,
        }
        if compile_error is not None:
            details["compile_error"] = compile_error
        return TrainResult(losses=losses, params=params, diverged_step=diverged,
                           compile_seconds=compile_seconds, train_seconds=train_seconds,
                           device="cpu", details=details)

    def _prepare(self, inputs: Inputs):
        """A trainer whose graphs are warmed up: (trainer, warm-up seconds, loop name, compile
        error or None). Falls back to eager when compilation fails."""
        start = time.perf_counter()
        error = None
        if self.compile:
            trainer = _Trainer(inputs, _compiled_loss())
            try:
                trainer.warm_up()
                return (trainer, time.perf_counter() - start,
                        "compiled: torch.compile(inductor, fullgraph, static shapes)", None)
            except Exception as err:  # any compiler failure: train eagerly instead
                error = f"{type(err).__name__}: {str(err)[:500]}"
        trainer = _Trainer(inputs, _loss)
        trainer.warm_up()
        return trainer, time.perf_counter() - start, "eager", error


@contextlib.contextmanager
def _dynamo_limits(torch):
    """Raise torch._dynamo's recompile limit while training (see RECOMPILE_LIMIT)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    with config.patch(**{name: max(RECOMPILE_LIMIT, getattr(config, name))}):
        yield


def _run(trainer: _Trainer, steps: int, progress: Progress | None):
    """The training loop of spec section 5 with the divergence contract of backends/base.py.
    Returns (losses float64 (k_end + 1,), diverged step or None)."""
    torch = trainer.torch
    losses = np.empty(steps + 1, dtype=np.float64)
    k0 = 0
    while k0 < steps:
        k1 = min(k0 + CHUNK, steps)
        snap = trainer.snapshot()
        chunk = []
        for k in range(k0, k1):
            chunk.append(trainer.grad_step(k))
            trainer.update(k)
        values = torch.stack(chunk).to(torch.float64).numpy()
        if not (np.isfinite(values).all() and trainer.params_finite()):
            trainer.restore(snap)
            diverged = _replay(trainer, losses, k0, k1, steps)
            if progress is not None:
                progress(diverged)
            return losses[: diverged + 1], diverged
        losses[k0:k1] = values
        k0 = k1
        if progress is not None:
            progress(k1)
    losses[steps] = float(trainer.final_loss())
    if not math.isfinite(losses[steps]):
        return losses, steps
    return losses, None


def _replay(trainer: _Trainer, losses: np.ndarray, k0: int, k1: int, steps: int) -> int:
    """Re-run steps k0..k1 one at a time, checking every loss and theta, from the snapshot at
    k0; stop at the first non-finite one (no update applied there) and return its step."""
    for k in range(k0, k1 + 1):
        loss = trainer.grad_step(k) if k < steps else trainer.final_loss()
        losses[k] = float(loss)
        if not (math.isfinite(losses[k]) and trainer.params_finite()):
            return k
        if k < steps:
            trainer.update(k)
    raise RuntimeError(f"torch backend: steps {k0}..{k1} had a non-finite value that a replay "
                       f"did not reproduce (non-deterministic computation?)")
