"""The TensorFlow backend: HRTA-SPEC.md sections 1-5 in TensorFlow ops, trained by
a ``tf.while_loop`` in a ``tf.function`` over fixed-length chunks of steps.

- Gradients: ``tf.GradientTape`` (framework autodiff) on the loss of spec section 3.
- Loop: one ``tf.function`` (XLA-compiled, ``jit_compile=True``, unless ``POLICY`` says
  otherwise) runs a chunk of ``CHUNK`` evaluations; s_k, lr_k,
  the batch indices and the reset flags of the chunk are fed as tensors, so the function is
  traced and compiled once per program structure (:func:`structure_key`) and reused by later
  runs of that structure in the same process (:class:`Program`). A zero-length call before
  the clock starts pays that one-off cost (``compile_seconds``) and changes no variable.
- Optimizers (see docs/backends.md): plain SGD (momentum 0) is Keras' own
  ``keras.optimizers.SGD``, whose update ``w -= g * lr`` is the spec's for any lr_k. Keras'
  momentum SGD keeps m = mu m - lr g (the spec's -lr v only while lr is constant), Keras'
  Adam adds eps to sqrt(v) before bias correction ("epsilon hat"), and both cast their
  Python-float hyperparameters through float32; so SGD with momentum or nesterov and Adam are
  the spec's formulas written in TF ops (:class:`SpecSGD`, :class:`SpecAdam`), operation for
  operation as in :mod:`hrta.optim`.
- Everything is in the run's dtype (float32 or float64); the module imports without
  TensorFlow installed (TensorFlow is imported inside the methods).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict

import numpy as np

from hrta.backends.base import Backend, Params, Progress, TrainResult
from hrta.backends.compile_policy import CompilePolicy
from hrta.inputs import Inputs
from hrta.spec import OptimizerSpec

CHUNK = 500
"""Loss evaluations per compiled call (and per progress report)."""

POLICY = CompilePolicy(
    env="HRTA_TF_JIT_COMPILE", step_seconds=1.2e-4, entry_seconds=3.0e-8,
    compile_seconds=0.5, compiler="XLA (jit_compile=True)", default="1")
"""When a run's loop is XLA-compiled (:mod:`hrta.backends.compile_policy`):
``HRTA_TF_JIT_COMPILE`` 1 (the default: always), auto or 0; otherwise the same
``tf.function`` runs as a TensorFlow graph without XLA. Always by default because the graph's
float32 arithmetic is less accurate on some runs: the default grid's friedman1 homotopy run
(float32, GD lr 1, 400 steps) ends with b 7.4e-5 from the float64 reference under the graph,
6.1e-6 under XLA and in NumPy's float32 reference, which fails the certificate (eager torch
deviates identically). ``auto`` trades that for speed on short runs: measured here (float64),
a graph step costs 70-130 us at width 16-64, n 20-100 and 0.24-0.25 s at width 8192, n 1024
(30 ns per entry of the n x width intermediates), an XLA step 11-25 us and 21-23 ms; tracing
and XLA compilation took 0.44-0.95 s per structure against 0.13-0.59 s for tracing alone. The
model overestimates mid sizes (width 1000, n 100: 3.1 ms against 1.0-1.2 ms measured), which
errs towards XLA."""

PARAM_ORDER = ("W", "b", "a")


class _OneTracePerRun(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning: every run builds (and
    traces once) its own chunk function, so many runs in one process look like retracing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def import_tf():
    """TensorFlow, imported quietly (C++ INFO/WARNING logs off; oneDNN off, whose sums vary
    run to run), with op determinism enabled."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    logger = tf.get_logger()
    if not any(isinstance(f, _OneTracePerRun) for f in logger.filters):
        logger.addFilter(_OneTracePerRun())
    return tf


def import_keras():
    """Keras 3 on its TensorFlow backend, or None when Keras runs on another backend."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras if keras.backend.backend() == "tensorflow" else None


# ---------------------------------------------------------------------------- the model

def forward_tf(tf, W, b, a, X, s):
    """f_s(X) = sigma_s(X W^T + b) a / sqrt(m), shape (n,); every tensor in one dtype."""
    z = tf.matmul(X, W, transpose_b=True) + b
    h = (1 - s) * z + s * tf.nn.relu(z)
    return tf.linalg.matvec(h, a) / tf.sqrt(tf.cast(tf.shape(W)[0], W.dtype))


def loss_tf(tf, W, b, a, X, y, s):
    """L_s = sum (f_s(x_i) - y_i)^2 / (2 B) over the B rows of X, a scalar."""
    r = forward_tf(tf, W, b, a, X, s) - y
    return tf.reduce_sum(r * r) / tf.cast(2 * tf.shape(X)[0], X.dtype)


# ---------------------------------------------------------------------------- optimizers
# An update rule has ``native`` and ``description``, and three methods: ``build(tf, variables)``
# creates its state variables, ``reset_state(tf)`` zeroes them (eagerly, before a run) and
# ``apply(tf, grads, variables, lr, reset)`` is traced into the loop: it zeroes the state when
# the bool tensor ``reset`` is true, then updates ``variables`` with the step's ``lr``.

class KerasUpdate:
    """A Keras optimizer applied with the run's lr_k: the learning rate is a callable that
    reads a variable of the run's dtype (Keras' own lr variable is float32 whatever the
    model's dtype). A reset zeroes every optimizer variable (slots and iteration count), which
    is what re-creating the optimizer does.

    Keras casts its Python-float hyperparameters through float32 (``keras.ops.cast(0.9,
    "float64")`` is 0.8999999762), so only an optimizer whose update uses none of them in
    float64 follows the spec exactly: SGD with momentum 0 (``w -= g * lr``)."""

    native = True

    def __init__(self, tf, optimizer_class, dtype, **kwargs):
        self.lr = tf.Variable(tf.zeros([], dtype), trainable=False, name="lr_k")
        lr = self.lr
        self.optimizer = optimizer_class(learning_rate=lambda: lr, **kwargs)
        self.description = (f"native {type(self.optimizer).__module__.split('.')[0]}."
                            f"optimizers.{type(self.optimizer).__name__}"
                            f"({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")

    def build(self, tf, variables):
        self.optimizer.build(variables)

    def reset_state(self, tf):
        for state in self.optimizer.variables:
            state.assign(tf.zeros_like(state))

    def apply(self, tf, grads, variables, lr, reset):
        for state in self.optimizer.variables:
            state.assign(tf.where(reset, tf.zeros_like(state), state))
        self.lr.assign(lr)
        self.optimizer.apply(grads, variables)


class SpecSGD:
    """Spec section 5 SGD in TF ops (PyTorch convention): v <- mu v + g;
    theta <- theta - lr v, or theta - lr (g + mu v) with nesterov."""

    native = False

    def __init__(self, tf, dtype, momentum: float, nesterov: bool, reason: str):
        self.mu = tf.constant(momentum, dtype)
        self.nesterov = nesterov
        self.description = (f"spec SGD in TF ops (momentum={momentum}, nesterov={nesterov}): "
                            f"{reason}")

    def build(self, tf, variables):
        self.velocity = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    def reset_state(self, tf):
        for v in self.velocity:
            v.assign(tf.zeros_like(v))

    def apply(self, tf, grads, variables, lr, reset):
        for g, p, v in zip(grads, variables, self.velocity, strict=True):
            velocity = self.mu * tf.where(reset, tf.zeros_like(v), v) + g
            step = g + self.mu * velocity if self.nesterov else velocity
            p.assign(p - lr * step)
            v.assign(velocity)


class SpecAdam:
    """Spec section 5 Adam in TF ops, eps outside the square root (torch.optim.Adam):
    t <- t+1; m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    theta <- theta - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)."""

    native = False

    def __init__(self, tf, dtype, b1: float, b2: float, eps: float):
        self.dtype = dtype
        self.b1, self.b2, self.eps = (tf.constant(x, dtype) for x in (b1, b2, eps))
        self.description = (f"spec Adam in TF ops (betas=({b1}, {b2}), eps={eps}): Keras' "
                            "Adam uses epsilon hat = eps sqrt(1 - b2^t)")

    def build(self, tf, variables):
        self.t = tf.Variable(tf.zeros([], tf.int64), trainable=False)
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    def reset_state(self, tf):
        for state in (self.t, *self.m, *self.v):
            state.assign(tf.zeros_like(state))

    def apply(self, tf, grads, variables, lr, reset):
        t = tf.where(reset, tf.zeros_like(self.t), self.t) + 1
        self.t.assign(t)
        t = tf.cast(t, self.dtype)
        b1, b2 = self.b1, self.b2
        for g, p, m_var, v_var in zip(grads, variables, self.m, self.v, strict=True):
            m = b1 * tf.where(reset, tf.zeros_like(m_var), m_var) + (1 - b1) * g
            v = b2 * tf.where(reset, tf.zeros_like(v_var), v_var) + (1 - b2) * g * g
            m_hat = m / (1 - b1 ** t)
            v_hat = v / (1 - b2 ** t)
            p.assign(p - lr * m_hat / (tf.sqrt(v_hat) + self.eps))
            m_var.assign(m)
            v_var.assign(v)


def make_update(tf, spec: OptimizerSpec, dtype):
    """The update rule of the run: native Keras where it is the spec's formula, else spec ops."""
    if spec.name == "sgd" and spec.momentum == 0.0:
        keras = import_keras()
        if keras is not None:
            return KerasUpdate(tf, keras.optimizers.SGD, dtype, momentum=0.0)
        return SpecSGD(tf, dtype, 0.0, False, "Keras runs on another backend "
                       f"(KERAS_BACKEND={os.environ.get('KERAS_BACKEND')})")
    if spec.name == "sgd":
        return SpecSGD(tf, dtype, spec.momentum, spec.nesterov,
                       "Keras keeps m = mu m - lr g (the spec's -lr v only for constant lr) "
                       "and casts mu through float32")
    if spec.name == "adam":
        return SpecAdam(tf, dtype, spec.betas[0], spec.betas[1], spec.eps)
    raise ValueError(f"optimizer.name: expected sgd or adam, got {spec.name!r}")


# ---------------------------------------------------------------------------- training

def structure_key(inputs: Inputs, jit_compile: bool, chunk: int) -> tuple:
    """What fixes a compiled program: dtype, optimizer kind and hyperparameters, trainable set,
    shapes, batch size and chunk length. s_k, lr_k, resets, batches and data are inputs."""
    spec = inputs.spec
    opt = spec.optimizer
    return (spec.dtype, opt.name, opt.momentum, opt.nesterov, opt.betas, opt.eps,
            spec.model.train, inputs.W0.shape, inputs.X_train.shape, spec.batch_size,
            min(chunk, spec.total_steps + 1), jit_compile)


class Program:
    """The compiled training loop of one program structure (:func:`structure_key`), with its
    own parameter and optimizer-state variables; :meth:`run` loads a run's inputs into them,
    so runs of the same structure in one process trace and compile once.

    One call of the compiled chunk function runs ``length`` loss evaluations: it evaluates
    L_k = L_{s_k}(theta_k) on the full training set (s_{K-1} at k = K), stops at the first
    non-finite loss or parameter, and applies the update of step k (after the reset of spec
    section 4 where flagged) only for k < K and finite L_k, theta_k.
    """

    def __init__(self, tf, inputs: Inputs, update, jit_compile: bool, length: int):
        spec = inputs.spec
        self.tf, self.update, self.jit_compile, self.length = tf, update, jit_compile, length
        self.dtype = tf.as_dtype(spec.dtype)
        self.full_batch = inputs.batches is None
        self.batch_size = 1 if self.full_batch else inputs.batches.shape[1]
        self.params = {k: tf.Variable(tf.zeros(v.shape, self.dtype), name=k)
                       for k, v in inputs.initial_params().items()}
        self.trained = [self.params[k] for k in PARAM_ORDER if k in spec.model.train]
        update.build(tf, self.trained)
        # autograph off: the loop is written with tf.while_loop / tf.cond already, and
        # converting it took 40% of each trace (0.43 s to 0.27 s per trace under cProfile)
        self.run_chunk = tf.function(self._chunk, jit_compile=jit_compile, autograph=False)
        self.runs = 0
        self.lock = threading.Lock()

    def _step(self, X, y, i, s, lr, reset, batch, n_updates):
        tf, trained = self.tf, self.trained
        W, b, a = self.params["W"], self.params["b"], self.params["a"]
        if self.full_batch:  # the gradient comes with the full-batch loss
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(trained)
                loss = loss_tf(tf, W, b, a, X, y, s)
            grads = tape.gradient(loss, trained)
        else:
            loss = loss_tf(tf, W, b, a, X, y, s)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(trained)
                batch_loss = loss_tf(tf, W, b, a, tf.gather(X, batch), tf.gather(y, batch), s)
            grads = tape.gradient(batch_loss, trained)
        finite = tf.math.is_finite(loss)
        for p in (W, b, a):
            finite = finite & tf.reduce_all(tf.math.is_finite(p))

        def apply():
            self.update.apply(tf, grads, trained, lr, reset)
            return tf.constant(True)

        tf.cond(finite & (i < n_updates), apply, lambda: tf.constant(False))
        return loss, finite

    def _chunk(self, X, y, s, lr, reset, batches, count, n_updates):
        """Evaluations i < count of one chunk (updates only for i < n_updates); returns the
        losses (length ``length``, valid below the returned count), the count that ran and
        whether it stopped at a non-finite loss or parameter."""
        tf = self.tf

        def body(i, stop, losses):
            loss, finite = self._step(X, y, i, s[i], lr[i], reset[i], batches[i], n_updates)
            return i + 1, ~finite, losses.write(i, loss)

        i, stop, losses = tf.while_loop(
            lambda i, stop, losses: (i < count) & ~stop, body,
            (tf.constant(0), tf.constant(False), tf.TensorArray(self.dtype, size=self.length)))
        return losses.stack(), i, stop

    def run(self, inputs: Inputs, progress: Progress | None = None) -> TrainResult:
        with self.lock:
            return self._run(inputs, progress)

    def _run(self, inputs: Inputs, progress: Progress | None) -> TrainResult:
        tf, length = self.tf, self.length
        steps = inputs.spec.total_steps
        evaluations = steps + 1
        for key, value in inputs.initial_params().items():
            self.params[key].assign(value)
        self.update.reset_state(tf)
        X, y = tf.constant(inputs.X_train), tf.constant(inputs.y_train)

        # Per-evaluation tables, padded to whole chunks (k = K reuses s_{K-1}; no update).
        padded = -(-evaluations // length) * length
        s_table = np.full(padded, inputs.s[-1], dtype=inputs.dtype)
        s_table[:steps] = inputs.s
        lr_table = np.zeros(padded, dtype=inputs.dtype)
        lr_table[:steps] = inputs.lr
        reset_table = np.zeros(padded, dtype=bool)
        reset_table[:steps] = inputs.reset
        batch_table = np.zeros((padded, self.batch_size), dtype=np.int64)
        if not self.full_batch:
            batch_table[:steps] = inputs.batches

        def call(start: int, count: int):
            end = start + length
            return self.run_chunk(X, y, tf.constant(s_table[start:end]),
                                  tf.constant(lr_table[start:end]),
                                  tf.constant(reset_table[start:end]),
                                  tf.constant(batch_table[start:end]),
                                  tf.constant(count, tf.int32),
                                  tf.constant(min(steps - start, length), tf.int32))

        started = time.perf_counter()
        call(0, 0)  # trace + XLA compile on first use; zero evaluations change no variable
        compile_seconds = time.perf_counter() - started

        started = time.perf_counter()
        losses: list[np.ndarray] = []
        diverged = None
        reported = 0
        for start in range(0, evaluations, length):
            chunk_losses, ran, stopped = call(start, min(length, evaluations - start))
            ran = int(ran)
            losses.append(chunk_losses.numpy()[:ran])
            if bool(stopped):
                diverged = start + ran - 1
            done = min(start + ran, steps) if diverged is None else diverged
            if progress is not None and done > reported:
                progress(done)
                reported = done
            if diverged is not None:
                break
        params = {k: v.numpy() for k, v in self.params.items()}
        train_seconds = time.perf_counter() - started

        self.runs += 1
        details = {
            "loop": f"tf.function(jit_compile={self.jit_compile}) over tf.while_loop, "
                    f"{length} evaluations per call",
            "program": ("traced and compiled for this run" if self.runs == 1 else
                        f"reused: compiled by an earlier run in this process (use {self.runs})"),
            "gradients": "tf.GradientTape",
            "optimizer": self.update.description,
            "optimizer_native": self.update.native,
            "lr_schedule": "lr_k from inputs (precomputed by the suite), fed per step",
            "op_determinism": True,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        }
        device = tf.DeviceSpec.from_string(self.params["W"].device).device_type or "CPU"
        return TrainResult(losses=np.concatenate(losses).astype(np.float64), params=params,
                           diverged_step=diverged, compile_seconds=compile_seconds,
                           train_seconds=train_seconds, device=device.lower(), details=details)


CACHED_PROGRAMS = 8
_programs: OrderedDict[tuple, Program] = OrderedDict()
_programs_lock = threading.Lock()


def cached_program(tf, inputs: Inputs, jit_compile: bool = True, chunk: int = CHUNK) -> Program:
    """The program of this run's structure, built (with the update of :func:`make_update`) on
    first use and kept for the last ``CACHED_PROGRAMS`` structures used."""
    key = structure_key(inputs, jit_compile, chunk)
    with _programs_lock:
        program = _programs.pop(key, None)
        if program is None:
            update = make_update(tf, inputs.spec.optimizer, tf.as_dtype(inputs.spec.dtype))
            program = Program(tf, inputs, update, jit_compile, key[-2])
        _programs[key] = program
        while len(_programs) > CACHED_PROGRAMS:
            _programs.popitem(last=False)
    return program


def train_with(tf, inputs: Inputs, update, progress: Progress | None = None,
               jit_compile: bool = True, chunk: int = CHUNK) -> TrainResult:
    """Train ``inputs`` with a given update rule in a fresh (uncached) program: for
    measurements, e.g. of Keras' own optimizers against the spec's formulas."""
    length = min(chunk, inputs.spec.total_steps + 1)
    return Program(tf, inputs, update, jit_compile, length).run(inputs, progress)


class TensorflowBackend(Backend):
    name = "tensorflow"
    framework = "tensorflow"
    install_hint = "pip install 'hrta-bench[tensorflow]'"
    description = ("tf.GradientTape, XLA-compiled tf.while_loop; native Keras SGD for plain "
                   "GD, spec-formula momentum SGD and Adam in TF ops")

    def __init__(self, compile: bool | str | None = None):
        """``compile``: True (always XLA-compile the loop), False (never) or "auto" (when it
        pays, see ``POLICY``); None: ``HRTA_TF_JIT_COMPILE`` decides (default always)."""
        if compile is not None:
            POLICY.mode(compile)  # a bad value fails here, naming the argument
        self.compile = compile

    def versions(self) -> dict[str, str]:
        tf = import_tf()
        out = {**super().versions(), "tensorflow": tf.__version__}
        keras = import_keras()
        if keras is not None:
            out["keras"] = keras.__version__
        return out

    def forward(self, params: Params, X: np.ndarray, s: float) -> np.ndarray:
        tf = import_tf()
        W, b, a = (tf.constant(np.asarray(params[k], X.dtype)) for k in PARAM_ORDER)
        return forward_tf(tf, W, b, a, tf.constant(X), tf.constant(X.dtype.type(s))).numpy()

    def loss_and_grad(self, params: Params, X: np.ndarray, y: np.ndarray, s: float,
                      trainable: tuple[str, ...]) -> tuple[float, Params]:
        tf = import_tf()
        tensors = {k: tf.constant(np.asarray(params[k], X.dtype)) for k in PARAM_ORDER}
        watched = [k for k in PARAM_ORDER if k in trainable]
        with tf.GradientTape() as tape:
            tape.watch([tensors[k] for k in watched])
            loss = loss_tf(tf, *(tensors[k] for k in PARAM_ORDER), tf.constant(X),
                           tf.constant(np.asarray(y, X.dtype)), tf.constant(X.dtype.type(s)))
        grads = tape.gradient(loss, [tensors[k] for k in watched])
        return float(loss.numpy()), {k: g.numpy() for k, g in zip(watched, grads, strict=True)}

    def train(self, inputs: Inputs, progress: Progress | None = None) -> TrainResult:
        self.require()
        xla, why = POLICY.decide(inputs.spec, self.compile)
        tf = import_tf()
        result = cached_program(tf, inputs, jit_compile=xla).run(inputs, progress)
        result.details["compile_policy"] = why
        return result


__all__ = ["CHUNK", "KerasUpdate", "Program", "SpecAdam", "SpecSGD", "TensorflowBackend",
           "cached_program", "make_update", "structure_key", "train_with"]
