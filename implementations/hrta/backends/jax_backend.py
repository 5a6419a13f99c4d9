"""The JAX backend: jax.grad for the gradients, optax for the optimizers, and a jit-compiled
``lax.scan`` over the training steps.

The training loop is one compiled function that runs ``chunk`` steps with ``lax.scan``; the
host calls it ceil((K + 1) / chunk) times, reporting progress and stopping early after a
divergence. The K + 1 evaluations are the K steps and the loss of theta_K (at s_{K-1}), which
is one more scan step that updates nothing, so one program per structure does it all. Every
call has the same shapes (the last chunk is padded with masked steps), so it is compiled once,
ahead of time (``.lower(...).compile()``), and compile time is measured apart from training
time. Compiled programs are cached per structure (dtype, shapes, trainable set,
optimizer hyperparameters, batch size), so a second run of the same structure compiles nothing.

Spec mapping (HRTA-SPEC.md sections 1-5):

- f_s(x) = sigma_s(x W^T + b) a / sqrt(m), sigma_s(z) = (1 - s) z + s relu(z), with
  ``jax.nn.relu`` (its derivative at 0 is 0; ``jnp.maximum(z, 0)`` would give 1/2 there).
- gradients: ``jax.value_and_grad`` of the loss over the trainable parameters (full batch: the
  loss of step k comes with its gradient; minibatch: ``jax.grad`` on the batch, the full loss
  apart).
- optimizers: native ``optax.sgd(lr_k, momentum, nesterov)`` and ``optax.adam(lr_k, b1, b2,
  eps, eps_root=0)``, built inside the step with that step's lr_k from ``inputs.lr`` (their
  state does not depend on the learning rate, so it carries over from step to step). optax's
  ``trace`` is v <- g + mu v, update -(g + mu v) with nesterov, and ``scale_by_adam`` puts eps
  outside the square root with bias correction: both are the spec's formulas.
- optimizer reset: before a step with ``inputs.reset[k]`` the state is replaced by
  ``optimizer.init`` (``jnp.where`` on the flag inside the scan).
- divergence: each step reports its full-set loss and whether theta_k is finite; the carry is
  frozen from the first bad step on (no update applied at or after it), and the host truncates.

Every array and operation is in the run's dtype; float64 needs ``jax_enable_x64``, which is
switched on only inside this backend's calls (``jax.enable_x64``), so other JAX users in the
process keep their defaults. Matmuls use ``Precision.HIGHEST`` (no TF32 or bf16 passes on
accelerators).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np

from hrta.backends.base import Backend, Params, Progress, TrainResult, first_divergence
from hrta.inputs import Inputs
from hrta.spec import OptimizerSpec

CHUNK_STEPS = 1000
"""Most scan steps per compiled call; the actual chunk splits the K + 1 evaluations evenly
(see chunk_size)."""


def chunk_size(steps: int, most: int = CHUNK_STEPS) -> int:
    """Scan steps per compiled call for ``steps`` evaluations (K + 1 for a run of K steps):
    split into ceil(steps / most) chunks of equal size, so that the padding of the last chunk
    is fewer steps than there are chunks."""
    chunks = -(-steps // most)
    return -(-steps // chunks)


@dataclass(frozen=True)
class Structure:
    """Everything that is baked into the compiled program: runs that share it share one
    executable. Arrays (data, initial parameters, s, lr, reset, batches) are arguments of the
    program, not part of it."""

    dtype: str
    trainable: tuple[str, ...]
    optimizer: tuple  # (name, momentum, nesterov, b1, b2, eps); lr comes from inputs.lr
    n: int
    d: int
    width: int
    batch_size: int | None
    steps: int

    @classmethod
    def of(cls, inputs: Inputs) -> Structure:
        spec = inputs.spec
        o: OptimizerSpec = spec.optimizer
        return cls(dtype=spec.dtype, trainable=tuple(spec.model.train),
                   optimizer=(o.name, o.momentum, o.nesterov, o.betas[0], o.betas[1], o.eps),
                   n=inputs.X_train.shape[0], d=inputs.X_train.shape[1],
                   width=inputs.W0.shape[0], batch_size=spec.batch_size,
                   steps=spec.total_steps)


# ---------------------------------------------------------------------------- the math


def _forward(params, X, s):
    """f_s(X), shape (n,), in the dtype of X (spec section 1)."""
    import jax
    import jax.numpy as jnp

    highest = jax.lax.Precision.HIGHEST
    W, b, a = params["W"], params["b"], params["a"]
    z = jnp.matmul(X, W.T, precision=highest) + b
    h = (1 - s) * z + s * jax.nn.relu(z)
    return jnp.matmul(h, a, precision=highest) / jnp.sqrt(jnp.asarray(W.shape[0], z.dtype))


def _loss(params, X, y, s):
    """L_s = sum (f - y)^2 / (2 B), a scalar in the dtype of X (spec section 3)."""
    import jax
    import jax.numpy as jnp

    r = _forward(params, X, s) - y
    return jnp.dot(r, r, precision=jax.lax.Precision.HIGHEST) / jnp.asarray(2 * X.shape[0],
                                                                            r.dtype)


def _split_loss(trained, frozen, X, y, s):
    return _loss({**frozen, **trained}, X, y, s)


def _optimizer(structure: Structure, lr):
    """The native optax optimizer of the spec, with learning rate ``lr`` (a traced scalar).
    Hyperparameters are arrays of the run's dtype, so that e.g. 1 - b1 is rounded in that
    dtype, as in the reference."""
    import jax.numpy as jnp
    import optax

    name, momentum, nesterov, b1, b2, eps = structure.optimizer

    def const(x):
        return jnp.asarray(x, structure.dtype)

    if name == "sgd":
        # momentum 0 is plain gradient descent, as in the reference (optax: identity + scale)
        return optax.sgd(lr, momentum=const(momentum) if momentum else None, nesterov=nesterov)
    if name == "adam":
        return optax.adam(lr, b1=const(b1), b2=const(b2), eps=const(eps), eps_root=const(0.0))
    raise ValueError(f"optimizer.name: expected sgd or adam, got {name!r}")


def _tree_where(flag, when_true, when_false):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda x, y: jnp.where(flag, x, y), when_true, when_false)


def _all_finite(params):
    import jax.numpy as jnp

    flags = [jnp.all(jnp.isfinite(p)) for p in params.values()]
    return jnp.stack(flags).all()


def _programs(structure: Structure):
    """The pure functions of one structure: ``init(params) -> carry`` and
    ``chunk(carry, xs, X, y) -> (carry, (losses, params_finite))``.

    carry = (params, optimizer state, stopped); xs = {s, lr, reset, live[, idx]}, each with
    leading axis ``chunk``; ``live`` is False on the evaluation of theta_K and on the padding
    steps of the last chunk: they report the loss and finiteness of the carried parameters and
    update nothing.
    """
    import jax
    import jax.numpy as jnp
    import optax

    trainable = structure.trainable
    value_and_grad = jax.value_and_grad(_split_loss)
    grad = jax.grad(_split_loss)

    def fresh_state(trained):
        return _optimizer(structure, jnp.asarray(0.0, structure.dtype)).init(trained)

    def split(params):
        trained = {k: params[k] for k in trainable}
        frozen = {k: v for k, v in params.items() if k not in trainable}
        return trained, frozen

    def init(params):
        trained, _ = split(params)
        return params, fresh_state(trained), jnp.asarray(False)

    def step(carry, x, X, y):
        params, state, stopped = carry
        trained, frozen = split(params)
        if structure.batch_size is None:
            loss, grads = value_and_grad(trained, frozen, X, y, x["s"])
        else:
            loss = _loss(params, X, y, x["s"])
            grads = grad(trained, frozen, X[x["idx"]], y[x["idx"]], x["s"])
        finite = _all_finite(params)
        bad = ~(jnp.isfinite(loss) & finite)
        state_in = _tree_where(x["reset"], fresh_state(trained), state)
        opt = _optimizer(structure, x["lr"])
        updates, new_state = opt.update(grads, state_in, trained)
        new_params = {**params, **optax.apply_updates(trained, updates)}
        halt = stopped | bad | ~x["live"]
        params = _tree_where(halt, params, new_params)
        state = _tree_where(halt, state, new_state)
        stopped = stopped | (bad & x["live"])
        return (params, state, stopped), (loss, finite)

    def chunk(carry, xs, X, y):
        return jax.lax.scan(lambda c, x: step(c, x, X, y), carry, xs)

    return init, chunk


@dataclass
class Compiled:
    """An AOT-compiled program and the seconds its tracing and compilation took."""

    program: Any
    seconds: float


def _shaped(*shape, dtype):
    import jax

    return jax.ShapeDtypeStruct(shape, np.dtype(dtype))


def _params_shapes(width: int, d: int, dtype: str) -> dict:
    return {"W": _shaped(width, d, dtype=dtype), "b": _shaped(width, dtype=dtype),
            "a": _shaped(width, dtype=dtype)}


@lru_cache(maxsize=16)
def _compile_chunk(structure: Structure) -> Compiled:
    """AOT-compile the chunk program of ``structure`` (``chunk_size(K + 1)`` scan steps per
    call). Call inside ``jax.enable_x64(True)``."""
    import jax

    started = time.perf_counter()
    init, chunk = _programs(structure)
    steps, dt = chunk_size(structure.steps + 1), structure.dtype
    params = _params_shapes(structure.width, structure.d, dt)
    X, y = _shaped(structure.n, structure.d, dtype=dt), _shaped(structure.n, dtype=dt)
    xs = {"s": _shaped(steps, dtype=dt), "lr": _shaped(steps, dtype=dt),
          "reset": _shaped(steps, dtype=np.bool_), "live": _shaped(steps, dtype=np.bool_)}
    if structure.batch_size is not None:
        xs["idx"] = _shaped(steps, structure.batch_size, dtype=np.int32)
    carry = jax.eval_shape(init, params)
    program = jax.jit(chunk).lower(carry, xs, X, y).compile()
    return Compiled(program, time.perf_counter() - started)


def _cached_call(compile_fn, *key) -> tuple[Compiled, bool]:
    """compile_fn(*key) and whether it came from the cache."""
    hits = compile_fn.cache_info().hits
    compiled = compile_fn(*key)
    return compiled, compile_fn.cache_info().hits > hits


@lru_cache(maxsize=1)
def _jitted() -> dict:
    """jax.jit of the forward pass and of value_and_grad, made once (jit caches per shape)."""
    import jax

    return {"forward": jax.jit(_forward),
            "value_and_grad": jax.jit(jax.value_and_grad(_split_loss))}


# ---------------------------------------------------------------------------- the loop


def _window(a: np.ndarray, start: int, size: int, fill=0) -> np.ndarray:
    """a[start:start + size] along axis 0, padded with ``fill`` to exactly ``size`` rows."""
    part = a[start:start + size]
    pad = size - len(part)
    if pad:
        part = np.concatenate([part, np.full((pad, *a.shape[1:]), fill, a.dtype)])
    return part


def _chunks(inputs: Inputs, size: int):
    """Yield (steps done after it, xs) for each chunk of the K + 1 evaluations: NumPy arrays
    with leading axis ``size``. Evaluation K (theta_K at s_{K-1}) has ``live`` False, as have
    the steps that pad the last chunk (s = lr = 0, batch 0: harmless, and masked anyway).
    Step 0 has ``reset`` True: the optimizer state starts as optax's ``init``, swapped in
    inside the compiled program like any reset (see :func:`_initial_carry`)."""
    steps = inputs.spec.total_steps
    reset = np.concatenate([inputs.reset, np.zeros(1, bool)])
    reset[0] = True
    per_step = {"s": inputs.s[np.r_[:steps, steps - 1]],  # evaluation K at s_{K-1}
                "lr": np.concatenate([inputs.lr, np.zeros(1, inputs.lr.dtype)]),
                "reset": reset,
                "live": np.arange(steps + 1) < steps}
    if inputs.batches is not None:
        batches = inputs.batches.astype(np.int32)
        per_step["idx"] = np.concatenate([batches, np.zeros_like(batches[:1])])
    for start in range(0, steps + 1, size):
        yield (min(start + size, steps),
               {k: _window(v, start, size) for k, v in per_step.items()})


def _initial_carry(structure: Structure, params: dict):
    """The carry of step 0, on the host: the parameters, a placeholder optimizer state of the
    right shapes (NumPy zeros; step 0's reset flag replaces it by optax's ``init`` inside the
    compiled program) and stopped = False. Calling ``init`` eagerly would compile a small
    program per operation, shape and dtype (12 in the smoke grid's jax job)."""
    import jax

    init, _ = _programs(structure)
    _, state, _ = jax.eval_shape(init, params)
    return params, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state), np.False_


def _device_name() -> str:
    import jax

    dev = jax.devices()[0]
    return f"{dev.platform}:{dev.device_kind}" if dev.platform != "cpu" else "cpu"


class JaxBackend(Backend):
    name = "jax"
    framework = "jax"
    install_hint = "pip install 'hrta-bench[jax]'"
    description = "jax.grad + native optax, jit-compiled lax.scan in fixed-size chunks"

    def versions(self) -> dict[str, str]:
        out = super().versions()
        for package in ("jax", "jaxlib", "optax"):
            try:
                out[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                out[package] = "not installed"
        return out

    # ---- single evaluations (the conformance suite's forward / gradient checks) ---------
    def forward(self, params: Params, X: np.ndarray, s: float) -> np.ndarray:
        self.require()
        import jax

        with jax.enable_x64(True):
            p = {k: np.asarray(params[k], X.dtype) for k in ("W", "b", "a")}
            return np.asarray(_jitted()["forward"](p, X, X.dtype.type(s)))

    def loss_and_grad(self, params: Params, X: np.ndarray, y: np.ndarray, s: float,
                      trainable: tuple[str, ...]) -> tuple[float, Params]:
        self.require()
        import jax

        with jax.enable_x64(True):
            p = {k: np.asarray(params[k], X.dtype) for k in ("W", "b", "a")}
            trained = {k: p[k] for k in trainable}
            frozen = {k: v for k, v in p.items() if k not in trainable}
            value, grads = _jitted()["value_and_grad"](trained, frozen, X,
                                                       np.asarray(y, X.dtype), X.dtype.type(s))
            return float(value), {k: np.asarray(v) for k, v in grads.items()}

    # ---- training -----------------------------------------------------------------------
    def train(self, inputs: Inputs, progress: Progress | None = None) -> TrainResult:
        self.require()
        import jax

        structure = Structure.of(inputs)
        steps = structure.steps
        with jax.enable_x64(True):
            chunk, cached = _cached_call(_compile_chunk, structure)
            compile_seconds = 0.0 if cached else chunk.seconds
            carry = _initial_carry(structure, {"W": inputs.W0, "b": inputs.b0, "a": inputs.a0})
            started = time.perf_counter()
            X, y = inputs.X_train, inputs.y_train
            losses, finite = [], []
            for done, xs in _chunks(inputs, chunk_size(steps + 1)):
                carry, (chunk_losses, chunk_finite) = chunk.program(carry, xs, X, y)
                losses.append(np.asarray(chunk_losses, dtype=np.float64))
                finite.append(np.asarray(chunk_finite))
                if bool(carry[2]):
                    break  # diverged in this chunk: the carry is frozen at that step
                if progress is not None:
                    progress(done)
            # evaluations 0..K (the padding of the last chunk dropped); after a divergence the
            # carry is frozen and first_divergence below truncates at the first bad one
            params = {k: np.array(v, dtype=inputs.dtype) for k, v in carry[0].items()}
            seconds = time.perf_counter() - started
            device = _device_name()
        all_losses = np.concatenate(losses)[:steps + 1]
        diverged = first_divergence(all_losses, np.concatenate(finite)[:steps + 1])
        end = steps if diverged is None else diverged
        if progress is not None:
            progress(end)
        return TrainResult(losses=all_losses[: end + 1], params=params, diverged_step=diverged,
                           compile_seconds=compile_seconds, train_seconds=seconds,
                           device=device,
                           details=self._details(structure, cached))

    @staticmethod
    def _details(structure: Structure, cached: bool) -> dict:
        name, momentum, nesterov, b1, b2, eps = structure.optimizer
        if name == "sgd":
            optimizer = (f"optax.sgd(lr_k, momentum={momentum or None}, nesterov={nesterov}) "
                         "[native: trace + scale_by_learning_rate]")
        else:
            optimizer = (f"optax.adam(lr_k, b1={b1}, b2={b2}, eps={eps}, eps_root=0) "
                         "[native: scale_by_adam + scale_by_learning_rate]")
        loop = (f"jax.jit(lax.scan) AOT-compiled, {chunk_size(structure.steps + 1)} of the K + 1 "
                "evaluations per call")
        return {
            "loop": loop,
            "gradients": ("jax.value_and_grad (full batch)" if structure.batch_size is None
                          else "jax.grad on the batch, full-set loss apart"),
            "optimizer": optimizer,
            "lr_schedule": "precomputed inputs.lr, fed to optax per step (not an optax "
                           "schedule: those count optimizer steps, which reset)",
            "optimizer_reset": "optax init state swapped in by jnp.where on inputs.reset",
            "activation": "(1 - s) z + s jax.nn.relu(z) (relu'(0) = 0)",
            "divergence": "per-step loss and finiteness; carry frozen from the first bad step, "
                          "host truncates",
            "compile_cached": cached,
            "determinism": {
                "jax_enable_x64": True,
                "matmul_precision": "HIGHEST (explicit on every matmul)",
                "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                "random_numbers": "none drawn",
            },
        }


__all__ = ["CHUNK_STEPS", "JaxBackend", "Structure", "chunk_size"]
