"""The PyTorch backend: torch autograd gradients and torch.optim's update, compiled into one
graph per training step with torch.compile.

What is native torch and what is not (docs/backends.md says the same):

- one step, one graph: forward, gradient and optimizer update of a training step are traced
  from :func:`_make_steps` into one ``torch.compile`` graph (inductor, ``fullgraph=True,
  dynamic=False``), compiled once per program structure (dtype, trainable set, optimizer and
  its constants, shapes, batch size, threads) and reused; eager (the same step function, not
  compiled) for runs too short to repay a compilation (``POLICY``), when compilation is
  switched off (``HRTA_TORCH_COMPILE=0`` or ``TorchBackend(compile=False)``)
  or when it fails, which ``details`` records.
- model and loss: torch tensor ops in the run's dtype (:func:`_forward`, :func:`_loss`).
- gradients: torch autograd, through ``torch.func.grad_and_value`` in the compiled step and
  ``torch.autograd.grad`` in the eager one.
- optimizers: torch.optim's functional implementations ``torch.optim.sgd.sgd`` (momentum,
  nesterov: PyTorch's convention is the spec's) and ``torch.optim.adam.adam`` (eps outside the
  square root, as the spec), the code ``torch.optim.SGD`` / ``torch.optim.Adam`` run; an
  optimizer reset zeroes the state (Adam's step count included), what a new torch.optim
  optimizer starts from.
- learning rates: lr_k comes precomputed in the inputs (one schedule for every backend) and is
  passed as a 0-d tensor per step; the closed forms of :mod:`hrta.schedules` are what
  ``torch.optim.lr_scheduler`` computes, which the test suite checks. s_k, batch indices and
  the optimizer-reset mask also come from the inputs, as tensors (no recompilation).
- hand-written: the loop (one call of the compiled step per step, the graph called without
  Dynamo's per-call guard check, see :class:`_Compiled`; losses and per-step finiteness flags
  read every ``CHUNK`` steps; the run stops at the first step whose loss or parameters are
  not finite, with theta_k from the kept inputs of its call).

torch is imported inside the functions, so this module imports without torch installed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from hrta.backends.base import Backend, Params, Progress, TrainResult
from hrta.backends.compile_policy import CompilePolicy
from hrta.inputs import Inputs

CHUNK = 100
"""Steps between finiteness checks and progress reports."""

UNROLL = 1
"""Training steps per call of the compiled step function (unrolled in its graph). Measured at
width 1000, n 100: 2 or 4 saved up to ~25% per float32 step and nothing in float64, while
compile time grew about in proportion (3-5 s cold at 1, 7-15 s at 4), so one."""

RECOMPILE_LIMIT = 64
"""torch._dynamo's per-function graph limit while training (default 8): one process may train
many dtype x trainable-set x batch-shape combinations, and each is its own static graph."""

POLICY = CompilePolicy(
    env="HRTA_TORCH_COMPILE", step_seconds=7.0e-4, entry_seconds=6.0e-8, compile_seconds=3.0,
    compiler="torch.compile")
"""When a run's step is compiled (:mod:`hrta.backends.compile_policy`; ``HRTA_TORCH_COMPILE``
auto, 1 or 0). Measured here (float64, one thread): the eager step costs 0.67-1.1 ms at width
16-64, n 20-100 (the dispatch of its ~60 small ops) and 0.5 s at width 8192, n 1024 (60 ns
per entry of the n x width intermediates; 0.05 s compiled); the model overestimates mid sizes
(width 1000, n 100: 6.7 ms against 1.8-2.9 ms measured), which errs towards compiling.
Compiling one step graph took 1.9-3.7 s per new structure, 0.4 s from inductor's on-disk
cache, and the first graph of a process up to ~23 s more (the smoke grid's first compile
after installing took 26 s: importing and warming the compiler stack). So the smoke grid's
runs (40 steps) and the default grid's (400 steps at width 64) train eagerly, the paper's
(5000 steps at width 1000) compiled. Neither loop is the more accurate in float32
everywhere: of the default grid's float32 agreement runs, the compiled step fails two
(multiscale1d, four-stage and linear-ramp: amplified rounding, see docs/backends.md) that the
eager one passes, and the eager one fails one (friedman1 homotopy: b 7.4e-5 from the float64
reference, 6.5e-6 compiled) that the compiled one passes."""

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

    X W^T is written as the broadcast product sum_k X[:, None, k] W[None, :, k] (d is the
    input dimension, 1 to 10 here): the same numbers (for d = 1 the same roundings), but
    inductor fuses it, and its gradient dW = sum_i dz_i x_i, into the elementwise kernels of
    the step instead of calling a GEMM with inner dimension d that materialises z (measured:
    a compiled float64 SGD step at width 1000, n 100, d 1 took ~111 us instead of ~157 us).
    """
    z = (X.unsqueeze(1) * W).sum(-1) + b
    h = (1 - s) * z + s * z.relu()
    return h @ a / root_m


def _loss(W, b, a, X, y, s, root_m):
    """L_s = sum (f_s(x_i) - y_i)^2 / (2 B) on the B rows of X and y (B,); a 0-d tensor."""
    r = _forward(W, b, a, X, s, root_m) - y
    return r @ r / (2 * X.shape[0])


def _set_deterministic(torch, mode: bool, warn_only: bool, compiling: bool) -> None:
    """``torch.use_deterministic_algorithms``, unless nothing is compiled and the compiler is
    not loaded: that function also sets inductor's ``deterministic`` flag, importing the
    compiler stack for it (1.2 s, measured), which eager code never reads. Then only the flag of
    the eager ops is set, through the call that function makes for it."""
    if (compiling or "torch._inductor.config" in sys.modules
            or not hasattr(torch._C, "_set_deterministic_algorithms")):
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


@contextlib.contextmanager
def _settings(compiling: bool = False):
    """Deterministic, full-precision settings for the duration of a call (``compiling``: one
    that may compile); yields a record of them. Restores the caller's settings afterwards."""
    torch = _torch()
    import torch.utils.deterministic as deterministic

    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             deterministic.fill_uninitialized_memory,
             torch.get_float32_matmul_precision(),
             torch.get_num_threads())
    threads = _threads()
    torch.set_num_threads(threads)
    _set_deterministic(torch, True, False, compiling)
    deterministic.fill_uninitialized_memory = False  # nothing reads uninitialised memory
    torch.set_float32_matmul_precision("highest")  # no TF32/bf16 shortcuts in float32 matmuls
    try:
        yield {"use_deterministic_algorithms": True,
               "fill_uninitialized_memory": False,
               "float32_matmul_precision": "highest",
               "num_threads": threads,
               "flush_denormal": False}
    finally:
        _set_deterministic(torch, saved[0], saved[1], compiling)
        deterministic.fill_uninitialized_memory = saved[2]
        torch.set_float32_matmul_precision(saved[3])
        if torch.get_num_threads() != saved[4]:
            torch.set_num_threads(saved[4])


@dataclass(frozen=True)
class _Structure:
    """Everything a training step's graph depends on besides tensor shapes and dtypes: the
    trainable set, the optimizer and its constants, full batch or minibatch, and the number of
    steps per call. Runs of one structure share a graph; s_k, lr_k, the batch indices and the
    reset mask are tensor inputs (data), so they never recompile."""

    train: tuple[str, ...]
    optimizer: str  # "sgd" or "adam"
    momentum: float
    nesterov: bool
    betas: tuple[float, float]
    eps: float
    minibatch: bool
    unroll: int

    @classmethod
    def of(cls, spec, unroll: int) -> _Structure:
        opt = spec.optimizer
        if opt.name == "sgd":
            return cls(tuple(spec.model.train), "sgd", float(opt.momentum), bool(opt.nesterov),
                       (0.0, 0.0), 0.0, spec.batch_size is not None, unroll)
        return cls(tuple(spec.model.train), "adam", 0.0, False,
                   (float(opt.betas[0]), float(opt.betas[1])), float(opt.eps),
                   spec.batch_size is not None, unroll)

    @property
    def state_names(self) -> tuple[str, ...]:
        """torch.optim's per-parameter state, in the order of the flat state tensors."""
        if self.optimizer == "adam":
            return ("exp_avg", "exp_avg_sq", "step")
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def describe(self) -> str:
        if self.optimizer == "sgd":
            return (f"torch.optim.sgd.sgd (the functional form of torch.optim.SGD: "
                    f"momentum={self.momentum}, nesterov={self.nesterov}, dampening=0, "
                    f"weight_decay=0, foreach=False)")
        return (f"torch.optim.adam.adam (the functional form of torch.optim.Adam: "
                f"betas={self.betas}, eps={self.eps}, amsgrad=False, weight_decay=0, "
                f"foreach=False, capturable=True when compiled)")


def _grad_and_value(torch, fn, trained: dict, *args, functional: bool):
    """(gradient of ``fn(trained, *args)`` with respect to the tensors of ``trained``, its
    value). ``functional``: through ``torch.func.grad_and_value`` (what torch.compile traces);
    otherwise through ``torch.autograd.grad`` on detached leaves, the same autograd arithmetic
    without importing torch._dynamo, which torch.func does (1.4 s of the 4.2 s the smoke grid's
    eager torch job took)."""
    if functional:
        return torch.func.grad_and_value(fn)(trained, *args)
    with torch.enable_grad():
        leaves = {k: v.detach().requires_grad_(True) for k, v in trained.items()}
        value = fn(leaves, *args)
        grads = torch.autograd.grad(value, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True)), value.detach()


def _make_steps(st: _Structure, functional: bool = True):
    """The function that runs ``st.unroll`` training steps (spec section 5) on flat tensors.

    Arguments, in order: W, b, a; the optimizer state (``len(st.train) x len(st.state_names)``
    tensors, parameter-major); X, y; then per step of the call (leading dimension unroll):
    s, lr, active, keep; root_m; and for minibatch runs the batch indices (unroll, B).
    Returns the new trainable parameters, the new state, the losses L_{s_k}(theta_k) on the
    full training set (unroll,) and per step whether that loss and every entry of theta_k are
    finite (unroll,).

    Per step: the gradient is ``torch.func.grad_and_value`` (torch autograd; with
    ``functional`` False, for the eager loop, ``torch.autograd.grad``) of ``_loss`` with
    respect to the trainable parameters; the update is torch.optim's own functional SGD / Adam
    (``torch.optim.sgd.sgd``, ``torch.optim.adam.adam``), the arithmetic torch.optim.SGD / Adam
    run. ``keep = False`` zeroes the optimizer state first (Adam's step count included), which
    is what a fresh torch.optim optimizer starts from; ``active = False`` leaves parameters and
    state as they were (the padding of a last, partial call, and the final-loss evaluation).
    Pure: nothing is modified in place, so the inputs of a call stay valid afterwards.
    """
    torch = _torch()
    from torch.optim.adam import adam
    from torch.optim.sgd import sgd

    names = ("W", "b", "a")
    n_train, n_state = len(st.train), len(st.state_names)

    def steps(*ts):
        params = dict(zip(names, ts[:3], strict=True))
        flat_state = list(ts[3:3 + n_train * n_state])
        state = [flat_state[i * n_state:(i + 1) * n_state] for i in range(n_train)]
        X, y, s, lr, active, keep, root_m = ts[3 + n_train * n_state:10 + n_train * n_state]
        batches = ts[10 + n_train * n_state] if st.minibatch else None
        losses, finite = [], []
        for j in range(st.unroll):
            s_j = s[j]

            def loss_on(trained, Xb, yb, s_j=s_j, params=params):
                p = {**params, **trained}
                return _loss(p["W"], p["b"], p["a"], Xb, yb, s_j, root_m)

            trained = {k: params[k] for k in st.train}
            if batches is None:  # the full-batch gradient comes with the loss
                grads, loss = _grad_and_value(torch, loss_on, trained, X, y,
                                              functional=functional)
            else:
                loss = loss_on(trained, X, y)
                idx = batches[j]
                grads, _ = _grad_and_value(torch, loss_on, trained, X.index_select(0, idx),
                                           y.index_select(0, idx), functional=functional)
            ok = torch.isfinite(loss)
            for k in names:
                ok = ok & torch.isfinite(params[k]).all()
            losses.append(loss)
            finite.append(ok)

            new = [params[k].clone() for k in st.train]
            fresh = [[torch.where(keep[j], v, 0) for v in sv] for sv in state]
            g = [grads[k] for k in st.train]
            if st.optimizer == "sgd":
                bufs = [sv[0] for sv in fresh] if n_state else [None] * n_train
                sgd(new, g, bufs, weight_decay=0.0, momentum=st.momentum, lr=lr[j],
                    dampening=0.0, nesterov=st.nesterov, maximize=False, foreach=False)
            else:
                adam(new, g, [sv[0] for sv in fresh], [sv[1] for sv in fresh], [],
                     [sv[2] for sv in fresh], foreach=False,
                     capturable=torch.compiler.is_compiling(), amsgrad=False,
                     beta1=st.betas[0], beta2=st.betas[1], lr=lr[j], weight_decay=0.0,
                     eps=st.eps, maximize=False)
            on = active[j]
            params = {**params, **{k: torch.where(on, v, params[k])
                                   for k, v in zip(st.train, new, strict=True)}}
            state = [[torch.where(on, v, old) for v, old in zip(fv, sv, strict=True)]
                     for fv, sv in zip(fresh, state, strict=True)]
        return (*[params[k] for k in st.train], *[v for sv in state for v in sv],
                torch.stack(losses), torch.stack(finite))

    return steps


_SOURCE = re.compile(r"^L\['ts'\]\[(\d+)\]$")


class _Compiled:
    """``torch.compile(fullgraph=True, dynamic=False)`` of a step function for one structure
    and one set of input shapes and dtypes, called without Dynamo's per-call guard check.

    The backend is inductor (``compile_fx``, what ``backend="inductor"`` runs), wrapped to keep
    the compiled graph and the order of its inputs. Dynamo's guards protect against anything
    that could change the traced program; here the cache key (structure, shapes, dtypes,
    threads) and the fixed settings of ``_settings`` pin all of it, so the graph is called
    directly, saving Dynamo's per-call overhead (measured by benchmarks/perf/torch_overhead.py:
    ~30 us a call, e.g. 18 against 46 us for a width-10 SGD step). If the graph's inputs or
    outputs cannot be matched to the function's, or the direct call differs by a bit from the
    guarded one, the Dynamo-compiled function is used as it is.
    """

    def __init__(self, fn, example):
        torch = _torch()
        from torch._inductor.compile_fx import compile_fx

        captured = []

        def backend(gm, example_inputs):
            compiled = compile_fx(gm, example_inputs)
            sources = [n.meta.get("grapharg") for n in gm.graph.nodes if n.op == "placeholder"]
            captured.append((compiled, [getattr(getattr(a, "source", None), "name", None)
                                        for a in sources]))
            return compiled

        self.guarded = torch.compile(fn, backend=backend, fullgraph=True, dynamic=False)
        reference = self.guarded(*example)
        self.call = self.guarded
        self.direct = False
        if len(captured) == 1:
            compiled, names = captured[0]
            order = [_SOURCE.match(n or "") for n in names]
            if all(order):
                order = [int(m.group(1)) for m in order]
                got = compiled(*[example[i] for i in order])
                if (isinstance(got, (list, tuple)) and len(got) == len(reference)
                        and all(_same(x, y) for x, y in zip(got, reference, strict=True))):
                    self.call = functools.partial(_call_direct, compiled, order)
                    self.direct = True


def _call_direct(compiled, order, *ts):
    return compiled(*[ts[i] for i in order])


def _same(x, y) -> bool:
    """Bitwise-equal tensors (NaN equal to NaN)."""
    torch = _torch()
    return (torch.is_tensor(x) and torch.is_tensor(y) and x.dtype == y.dtype
            and x.shape == y.shape and bool(torch.equal(x.view(-1).view(torch.uint8),
                                                        y.view(-1).view(torch.uint8))))


_COMPILED: dict = {}
"""(structure, shapes and dtypes of the inputs, threads) -> _Compiled; at most
``RECOMPILE_LIMIT - 1`` at a time (see :func:`_compiled`)."""


def _compiled(st: _Structure, example):
    """The compiled step of this structure and these inputs, compiled on first use. Every
    structure's step function shares one code object, and Dynamo counts graphs per code
    object: at RECOMPILE_LIMIT it would refuse to compile (fullgraph) and the run would train
    eagerly. So when the cache is full it is emptied and Dynamo reset, and the structures
    still in use are compiled again when next met (inductor's disk cache makes that quick);
    this also bounds the memory the compiled graphs hold."""
    torch = _torch()
    key = (st, tuple((tuple(t.shape), t.dtype) for t in example),
           torch.get_num_threads())  # inductor's C++ kernels are built for a thread count
    if key not in _COMPILED:
        if len(_COMPILED) >= RECOMPILE_LIMIT - 1:
            _COMPILED.clear()
            torch._dynamo.reset()
        _COMPILED[key] = _Compiled(_make_steps(st), example)
    return _COMPILED[key]


class _Trainer:
    """The state of one training run as tensors: parameters, optimizer state and, per call of
    the step function, the s_k, lr_k, active, keep (no reset) and batch tensors.

    ``call(c, params, state)`` runs call c (global steps c*U .. c*U+U-1) and returns the new
    parameters and state, the U losses and the U finiteness flags. Calls are pure and
    deterministic, so a call re-run from its inputs reproduces the same numbers bit for bit.
    """

    def __init__(self, inputs: Inputs, compile: bool):
        torch = _torch()
        spec = inputs.spec
        self.torch, self.spec = torch, spec
        unroll = UNROLL if compile else 1
        self.st = _Structure.of(spec, unroll)
        self.dtype = getattr(torch, spec.dtype)

        def tensor(array, dtype=None):
            return torch.from_numpy(np.array(array, dtype=dtype or spec.dtype, copy=True))

        self.X, self.y = tensor(inputs.X_train), tensor(inputs.y_train)
        self.params = {"W": tensor(inputs.W0), "b": tensor(inputs.b0), "a": tensor(inputs.a0)}
        # torch.optim's initial state: zeros. Adam's step is float64 in every run, so that its
        # bias corrections 1 - beta^t are computed in float64: in float32, beta2^t is rounded
        # before 1 - beta2^t ~ 1e-3 t cancels it, which put float32 runs 268 eps (params, 300
        # steps) from the reference instead of the 29 eps of jax and tensorflow (measured with
        # `hrta conformance --backend torch --measure`)
        self.state = [torch.zeros_like(self.params[name]) if key != "step"
                      else torch.zeros((), dtype=torch.float64)
                      for name in self.st.train for key in self.st.state_names]
        self.root_m = torch.sqrt(torch.tensor(float(inputs.W0.shape[0]), dtype=self.dtype))
        K, U = spec.total_steps, unroll
        self.steps, self.unroll = K, U
        calls = -(-K // U)
        pad = calls * U - K

        def padded(array, fill, dtype=None):
            a = np.asarray(array)
            a = np.concatenate([a, np.repeat(np.asarray([fill], dtype=a.dtype), pad, axis=0)])
            return list(tensor(a.reshape(calls, U, *a.shape[1:]), dtype).unbind())

        s = np.asarray(inputs.s, dtype=spec.dtype)
        self.s = padded(s, s[-1])
        self.lr = padded(np.asarray(inputs.lr, dtype=spec.dtype), 0)
        self.active = padded(np.ones(K, dtype=bool), False, bool)
        self.keep = padded(~np.asarray(inputs.reset, dtype=bool), True, bool)
        self.batches = None
        if inputs.batches is not None:
            b = np.asarray(inputs.batches, dtype=np.int64)
            self.batches = padded(b, b[-1], np.int64)
        # the final loss L_{s_{K-1}}(theta_K): a call with no step active, s_{K-1} throughout
        self.final = (tensor(np.full(U, s[-1])), self.lr[0],
                      torch.zeros(U, dtype=torch.bool), self.keep[0],
                      *(() if self.batches is None else (self.batches[0],)))
        self.fn = _make_steps(self.st, functional=False)  # eager until compile() below
        self.compiled = None

    def args(self, c, params, state, per_call=None):
        per_call = per_call or (self.s[c], self.lr[c], self.active[c], self.keep[c],
                                *(() if self.batches is None else (self.batches[c],)))
        s, lr, active, keep = per_call[:4]
        return (params["W"], params["b"], params["a"], *state, self.X, self.y, s, lr, active,
                keep, self.root_m, *per_call[4:])

    def compile(self) -> bool:
        """Compile (or fetch) the step function for this run's structure and shapes; returns
        whether the graph is called directly (see _Compiled)."""
        self.compiled = _compiled(self.st, self.args(0, self.params, self.state))
        self.fn = self.compiled.call
        return self.compiled.direct

    def call(self, c, params, state, per_call=None):
        out = self.fn(*self.args(c, params, state, per_call))
        n = len(self.st.train)
        trained = dict(zip(self.st.train, out[:n], strict=True))
        return {**params, **trained}, list(out[n:-2]), out[-2], out[-1]

    def final_loss(self, params, state):
        """L_{s_{K-1}}(theta_K) and whether it and theta_K are finite, through the same graph
        as the training steps' losses."""
        _, _, losses, finite = self.call(0, params, state, self.final)
        return float(losses[0]), bool(finite[0])

    def numpy_params(self, params) -> Params:
        return {k: p.detach().numpy().copy() for k, p in params.items()}


class TorchBackend(Backend):
    name = "torch"
    framework = "torch"
    install_hint = "pip install 'hrta-bench[torch]'"
    description = "PyTorch: autograd, torch.optim functional SGD/Adam, torch.compile per step"

    def __init__(self, compile: bool | str | None = None):
        """``compile``: True (always torch.compile the step), False (never) or "auto" (when
        it pays, see ``POLICY``); None: ``HRTA_TORCH_COMPILE`` decides (default auto)."""
        if compile is not None:
            POLICY.mode(compile)  # a bad value fails here, naming the argument
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
        compile, why = POLICY.decide(inputs.spec, self.compile)
        limits = _dynamo_limits(torch) if compile else contextlib.nullcontext()
        with _settings(compiling=compile) as settings, limits:
            trainer, compile_seconds, loop, compile_error = self._prepare(inputs, compile)
            start = time.perf_counter()
            losses, diverged, params = _run(trainer, progress)
            train_seconds = time.perf_counter() - start
            params = trainer.numpy_params(params)
        compiled = loop.startswith("compiled")
        details = {
            "loop": loop,
            "steps_per_call": trainer.unroll,
            "steps_per_check": CHUNK,
            "native": {
                "model_and_loss": "torch tensor ops" + (" under torch.compile (inductor), "
                                                        "one graph with gradient and update"
                                                        if compiled else ""),
                "gradients": ("torch.autograd via torch.func.grad_and_value (traced into "
                              "the compiled graph)" if compiled else
                              "torch.autograd.grad on the step's parameters"),
                "optimizer": trainer.st.describe(),
                "optimizer_reset": "the optimizer state (Adam's step count included) zeroed "
                                   "at each reset step, the state a new torch.optim optimizer "
                                   "starts from",
            },
            "from_inputs": {
                "lr": "lr_k precomputed by hrta.schedules (the torch.optim.lr_scheduler closed "
                      "forms, checked against them by the test suite), passed to the "
                      "functional optimizer as a 0-d tensor per step",
                "s": "s_k as a 0-d tensor per step",
                "batches": "shared index array, torch.index_select per step",
            },
            "handwritten": f"the training loop: {trainer.unroll} step(s) per call of the step "
                           f"function, which also returns per step whether L_k and theta_k "
                           f"are finite; losses and flags read every {CHUNK} steps; at a "
                           f"non-finite value the run stops at that step with theta_k from "
                           f"the kept inputs of its call",
            "determinism": settings,
            "compile_policy": why,
        }
        if compile_error is not None:
            details["compile_error"] = compile_error
        return TrainResult(losses=losses, params=params, diverged_step=diverged,
                           compile_seconds=compile_seconds, train_seconds=train_seconds,
                           device="cpu", details=details)

    def _prepare(self, inputs: Inputs, compile: bool):
        """A trainer whose step function is compiled (if ``compile``) and has run once:
        (trainer, warm-up seconds, loop name, compile error or None). Falls back to eager when
        compilation fails."""
        start = time.perf_counter()
        error = None
        if compile:
            trainer = _Trainer(inputs, compile=True)
            try:
                direct = trainer.compile()
                return (trainer, time.perf_counter() - start,
                        "compiled: torch.compile(inductor, fullgraph, static shapes), "
                        f"{trainer.unroll} steps per call"
                        + (", graph called directly" if direct else ""), None)
            except Exception as err:  # any compiler failure: train eagerly instead
                error = f"{type(err).__name__}: {str(err)[:500]}"
        trainer = _Trainer(inputs, compile=False)
        trainer.call(0, trainer.params, trainer.state)  # first-call costs, as compiled runs
        return trainer, time.perf_counter() - start, "eager", error


@contextlib.contextmanager
def _dynamo_limits(torch):
    """Raise torch._dynamo's recompile limit while training (see RECOMPILE_LIMIT)."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    with config.patch(**{name: max(RECOMPILE_LIMIT, getattr(config, name))}):
        yield


def _run(trainer: _Trainer, progress: Progress | None):
    """The training loop of spec section 5 with the divergence contract of backends/base.py.
    Returns (losses float64 (k_end + 1,), diverged step or None, theta_{k_end})."""
    torch = trainer.torch
    K, U = trainer.steps, trainer.unroll
    calls = -(-K // U)
    per_check = max(1, CHUNK // U)
    losses = np.empty(calls * U + 1, dtype=np.float64)
    params, state = trainer.params, trainer.state
    c0 = 0
    while c0 < calls:
        c1 = min(c0 + per_check, calls)
        kept, chunk_losses, chunk_finite = [], [], []
        for c in range(c0, c1):
            kept.append((params, state))
            params, state, loss, finite = trainer.call(c, params, state)
            chunk_losses.append(loss)
            chunk_finite.append(finite)
        k0, k1 = c0 * U, min(c1 * U, K)
        values = torch.cat(chunk_losses).to(torch.float64).numpy()[: k1 - k0]
        finite = torch.cat(chunk_finite).numpy()[: k1 - k0]
        bad = np.flatnonzero(~finite)
        if bad.size:  # the first step whose L_k or theta_k is not finite: stop there
            j = int(bad[0])
            k = k0 + j
            losses[k0:k + 1] = values[: j + 1]
            params, state = kept[j // U]
            if j % U:  # theta_k: re-run its call with only the steps before k active
                c = c0 + j // U
                active = torch.arange(U) < j % U
                per_call = (trainer.s[c], trainer.lr[c], active, trainer.keep[c],
                            *(() if trainer.batches is None else (trainer.batches[c],)))
                params, _, _, _ = trainer.call(c, params, state, per_call)
            if progress is not None:
                progress(k)
            return losses[: k + 1], k, params
        losses[k0:k1] = values
        c0 = c1
        if progress is not None:
            progress(k1)
    losses[K], finite = trainer.final_loss(params, state)
    return losses[: K + 1], (None if finite else K), params
