"""Timings of the performance harness: the machine's peak rates, each backend's training step,
the eager loop a user would write in the same framework (the peer), vectorised runs, and the
pipeline. Every figure is the best of several repeats (the machine is shared and noisy).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hrta.backends.registry import get_backend
from hrta.inputs import Inputs, build_inputs
from hrta.spec import RunSpec, parse_spec

REPO = Path(__file__).resolve().parents[2]

LR = {"sgd": 0.05, "adam": 1e-3}
"""Learning rates of the timed runs: small enough that no run diverges at either workload (a
diverged run stops early; the harness checks that every step ran)."""


def make_spec(width: int, n: int, steps: int, optimizer: str, dtype: str, seed: int = 0,
              lr: float | None = None) -> RunSpec:
    """The timed run: sin1d (d = 1), full batch, s = 0.5 for K/2 steps then a ramp to 1."""
    first = max(steps // 2, 1)
    homotopy = [{"s": 0.5, "steps": first}]
    if steps > first:
        homotopy.append({"s_from": 0.5, "s_to": 1.0, "steps": steps - first})
    return parse_spec({
        "task": {"name": "sin1d", "n_train": n, "n_test": 10},
        "model": {"width": width},
        "homotopy": homotopy,
        "optimizer": {"name": optimizer, "lr": LR[optimizer] if lr is None else lr},
        "dtype": dtype, "seed": seed, "log_every": max(steps, 1)})


def load() -> list[float]:
    """1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def best_of(fn, repeats: int) -> float:
    """The smallest of ``repeats`` calls of ``fn()`` (each returns seconds)."""
    return min(fn() for _ in range(max(repeats, 1)))


# ---------------------------------------------------------------------------- the machine


def peak_flops(dtype: str, size: int, repeats: int) -> float:
    """FLOP/s of a size x size matmul in NumPy's BLAS (all its threads): 2 size^3 / seconds."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    a @ b  # first call: thread start-up, page faults

    def once():
        start = time.perf_counter()
        a @ b
        return time.perf_counter() - start

    return 2 * size**3 / best_of(once, repeats)


def bandwidth(megabytes: int, repeats: int) -> dict[str, float]:
    """Memory bandwidth in bytes/s: ``copy`` (read + write of a float64 array of this size,
    counted as twice its bytes) and ``sum`` (read only); ``best`` the larger."""
    x = np.ones(megabytes * 2**20 // 8)
    y = np.empty_like(x)
    np.copyto(y, x)

    def copy():
        start = time.perf_counter()
        np.copyto(y, x)
        return time.perf_counter() - start

    def total():
        start = time.perf_counter()
        x.sum()
        return time.perf_counter() - start

    out = {"copy": 2 * x.nbytes / best_of(copy, repeats),
           "sum": x.nbytes / best_of(total, repeats)}
    out["best"] = max(out.values())
    return out


def elementwise_rate(elements: int, dtype: str, repeats: int) -> float:
    """Elementwise operations per second of one NumPy pass ``c = a * b`` over ``elements``
    numbers (one thread, in cache at the reference size): what an unfused step pays per pass
    over its n x m intermediates."""
    a = np.ones(elements, dtype)
    b = np.ones(elements, dtype)
    c = np.empty(elements, dtype)

    def once():
        start = time.perf_counter()
        for _ in range(20):
            np.multiply(a, b, out=c)
        return (time.perf_counter() - start) / 20

    return elements / best_of(once, repeats)


# ---------------------------------------------------------------------------- backends


def time_backend(name: str, inputs: Inputs, repeats: int) -> dict:
    """Train ``inputs`` on backend ``name`` ``repeats`` times: the best seconds per step
    (TrainResult.train_seconds / steps run) and the first run's compile seconds."""
    backend = get_backend(name)
    per_step, compile_seconds, steps_run, loop = [], None, None, ""
    for _ in range(max(repeats, 1)):
        result = backend.train(inputs)
        if compile_seconds is None:
            compile_seconds = result.compile_seconds
            loop = str(result.details.get("loop", ""))
        steps_run = result.steps_run
        per_step.append(result.train_seconds / max(result.steps_run, 1))
    return {"seconds_per_step": min(per_step), "compile_seconds": compile_seconds,
            "steps_run": steps_run, "steps": inputs.spec.total_steps, "loop": loop}


# ---------------------------------------------------------------------------- peers
# The loop a user would write in each framework without compiling anything: one Python
# iteration per step, the framework's autodiff and its own optimizer, the loss read each step.


def _s_values(inputs: Inputs, steps: int) -> list[float]:
    return [float(inputs.s[k % len(inputs.s)]) for k in range(steps)]


def peer_torch(inputs: Inputs, steps: int, warmup: int = 3) -> float:
    """Seconds per step of an eager torch loop: loss.backward() and torch.optim.SGD / Adam
    (their default implementation), no torch.compile, with the backend's thread count (see
    hrta.backends.torch_backend.THREADS_ENV), so the ratio measures the loop, not threading."""
    import torch

    from hrta.backends.torch_backend import _threads

    spec = inputs.spec
    saved = torch.get_num_threads()
    torch.set_num_threads(_threads())
    try:
        X, y = torch.from_numpy(inputs.X_train.copy()), torch.from_numpy(inputs.y_train.copy())
        W, b, a = (torch.from_numpy(v.copy()).requires_grad_(True)
                   for v in (inputs.W0, inputs.b0, inputs.a0))
        o = spec.optimizer
        opt = (torch.optim.SGD([W, b, a], lr=o.lr) if o.name == "sgd"
               else torch.optim.Adam([W, b, a], lr=o.lr, betas=o.betas, eps=o.eps))
        root_m, n = math.sqrt(W.shape[0]), X.shape[0]
        s_values = _s_values(inputs, steps + warmup)
        losses = []
        start = 0.0
        for k, s in enumerate(s_values):
            if k == warmup:
                start = time.perf_counter()
            opt.zero_grad()
            z = X @ W.T + b
            r = ((1 - s) * z + s * torch.relu(z)) @ a / root_m - y
            loss = (r * r).sum() / (2 * n)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return (time.perf_counter() - start) / steps
    finally:
        torch.set_num_threads(saved)


def peer_jax(inputs: Inputs, steps: int, warmup: int = 3) -> float:
    """Seconds per step of an un-jitted JAX loop: jax.value_and_grad and an optax update,
    applied eagerly op by op."""
    import jax
    import jax.numpy as jnp
    import optax

    spec = inputs.spec
    with jax.enable_x64(spec.dtype == "float64"):
        X, y = jnp.asarray(inputs.X_train), jnp.asarray(inputs.y_train)
        params = {"W": jnp.asarray(inputs.W0), "b": jnp.asarray(inputs.b0),
                  "a": jnp.asarray(inputs.a0)}
        root_m, n = math.sqrt(inputs.W0.shape[0]), X.shape[0]

        def loss_fn(p, s):
            z = X @ p["W"].T + p["b"]
            r = ((1 - s) * z + s * jax.nn.relu(z)) @ p["a"] / root_m - y
            return r @ r / (2 * n)

        value_and_grad = jax.value_and_grad(loss_fn)
        o = spec.optimizer
        opt = (optax.sgd(o.lr) if o.name == "sgd"
               else optax.adam(o.lr, b1=o.betas[0], b2=o.betas[1], eps=o.eps))
        state = opt.init(params)
        losses = []
        start = 0.0
        for k, s in enumerate(_s_values(inputs, steps + warmup)):
            if k == warmup:
                start = time.perf_counter()
            loss, grads = value_and_grad(params, s)
            updates, state = opt.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            losses.append(float(loss))
        return (time.perf_counter() - start) / steps


def peer_tensorflow(inputs: Inputs, steps: int, warmup: int = 3) -> float:
    """Seconds per step of an eager TensorFlow loop: tf.GradientTape and a Keras optimizer
    (keras.optimizers.SGD / Adam), no tf.function."""
    from hrta.backends.tensorflow_backend import import_keras, import_tf, loss_tf

    tf = import_tf()
    keras = import_keras()
    spec = inputs.spec
    X, y = tf.constant(inputs.X_train), tf.constant(inputs.y_train)
    variables = [tf.Variable(v) for v in (inputs.W0, inputs.b0, inputs.a0)]
    o = spec.optimizer
    opt = (keras.optimizers.SGD(learning_rate=o.lr) if o.name == "sgd" else
           keras.optimizers.Adam(learning_rate=o.lr, beta_1=o.betas[0], beta_2=o.betas[1],
                                 epsilon=o.eps))
    losses = []
    start = 0.0
    for k, s in enumerate(_s_values(inputs, steps + warmup)):
        if k == warmup:
            start = time.perf_counter()
        with tf.GradientTape() as tape:
            loss = loss_tf(tf, *variables, X, y, tf.constant(s, X.dtype))
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables, strict=True))
        losses.append(float(loss))
    return (time.perf_counter() - start) / steps


PEERS = {"torch": peer_torch, "jax": peer_jax, "tensorflow": peer_tensorflow}
"""numpy has no peer: its backend is the reference written as the plain per-step loop."""


def time_peer(name: str, inputs: Inputs, steps: int, repeats: int) -> float | None:
    if name not in PEERS:
        return None
    return best_of(lambda: PEERS[name](inputs, steps), repeats)


# ---------------------------------------------------------------------------- vectorised


def run_inputs(width: int, n: int, steps: int, runs: int, dtype: str) -> list[Inputs]:
    """``runs`` GD runs of one shape that differ in seed and learning rate (log-spaced from
    0.01 to 0.1), as a tuning grid would."""
    lrs = np.geomspace(0.01, 0.1, runs)
    return [build_inputs(make_spec(width, n, steps, "sgd", dtype, seed=i, lr=float(lr)))
            for i, lr in enumerate(lrs)]


def vmap_jax(runs: list[Inputs], repeats: int) -> dict:
    """A batch of runs through jax.vmap of the JAX backend's own compiled step (the chunk
    program of hrta.backends.jax_backend, one chunk of K steps, K < CHUNK_STEPS), against the
    same runs one by one through JaxBackend.train. Compile time is apart from both."""
    import jax
    import jax.numpy as jnp

    from hrta.backends import jax_backend as jb

    structure = jb.Structure.of(runs[0])
    steps = structure.steps
    if jb.chunk_size(steps + 1) != steps + 1:
        raise ValueError(f"vmap_jax: K + 1 = {steps + 1} evaluations must fit one chunk "
                         f"({jb.CHUNK_STEPS})")
    backend = get_backend("jax")
    one_by_one = best_of(lambda: sum(backend.train(i).train_seconds for i in runs), repeats)
    single_losses = [backend.train(i).losses[:steps] for i in runs]

    with jax.enable_x64(True):
        init, chunk = jb._programs(structure)

        def stack(values):
            return jnp.stack([jnp.asarray(v) for v in values])

        carry = jax.tree.map(lambda *xs: jnp.stack(xs),
                             *[init({"W": i.W0, "b": i.b0, "a": i.a0}) for i in runs])
        xs = {"s": stack(i.s for i in runs), "lr": stack(i.lr for i in runs),
              "reset": stack(i.reset for i in runs),
              "live": jnp.ones((len(runs), steps), dtype=bool)}
        X, y = stack(i.X_train for i in runs), stack(i.y_train for i in runs)
        started = time.perf_counter()
        program = jax.jit(jax.vmap(chunk)).lower(carry, xs, X, y).compile()
        compile_seconds = time.perf_counter() - started

        def batched():
            start = time.perf_counter()
            out = program(carry, xs, X, y)
            jax.block_until_ready(out)
            return time.perf_counter() - start

        seconds = best_of(batched, repeats)
        _, (losses, _) = program(carry, xs, X, y)
        losses = np.asarray(losses, dtype=np.float64)
    deviation = max(float(np.max(np.abs(batch - single) / np.abs(single)))
                    for batch, single in zip(losses, single_losses, strict=True))
    return {"framework": "jax", "how": "jax.jit(jax.vmap(chunk program of the JAX backend))",
            "runs": len(runs), "width": structure.width, "n": structure.n, "steps": steps,
            "dtype": structure.dtype, "one_by_one_seconds": one_by_one,
            "batched_seconds": seconds, "batched_compile_seconds": compile_seconds,
            "speedup": one_by_one / seconds, "max_rel_loss_deviation": deviation}


def batched_numpy_gd(runs: list[Inputs]) -> tuple[np.ndarray, float]:
    """Full-batch GD of every run at once in NumPy, the reference's formulas (hrta.model) with
    a leading run axis: W (R, m, d), b and a (R, m), X (R, n, d), y (R, n), lr and s (R, K).
    Returns (losses (R, K + 1), seconds of the loop)."""
    W = np.stack([i.W0 for i in runs])
    b = np.stack([i.b0 for i in runs])
    a = np.stack([i.a0 for i in runs])
    X = np.stack([i.X_train for i in runs])
    y = np.stack([i.y_train for i in runs])
    s_all = np.stack([i.s for i in runs])
    lr_all = np.stack([i.lr for i in runs])
    R, n, steps = len(runs), X.shape[1], s_all.shape[1]
    dt = X.dtype.type
    root_m = np.sqrt(dt(W.shape[1]))
    losses = np.empty((R, steps + 1))
    start = time.perf_counter()
    for k in range(steps + 1):
        s = s_all[:, min(k, steps - 1), None, None]
        z = X @ W.transpose(0, 2, 1) + b[:, None, :]
        h = (1 - s) * z + s * np.maximum(z, 0)
        r = np.einsum("rnm,rm->rn", h, a) / root_m - y
        losses[:, k] = np.einsum("rn,rn->r", r, r) / (2 * n)
        if k == steps:
            break
        g = r / n
        grad_a = np.einsum("rnm,rn->rm", h, g) / root_m
        dz = g[:, :, None] * (a / root_m)[:, None, :] * np.where(z > 0, dt(1), 1 - s)
        grad_W = dz.transpose(0, 2, 1) @ X
        grad_b = dz.sum(axis=1)
        lr = lr_all[:, k]
        W = W - lr[:, None, None] * grad_W
        b = b - lr[:, None] * grad_b
        a = a - lr[:, None] * grad_a
    return losses, time.perf_counter() - start


def vmap_numpy(runs: list[Inputs], repeats: int) -> dict:
    """A batch of GD runs through :func:`batched_numpy_gd` against the NumPy backend one by
    one; with the largest relative deviation of any loss from the one-by-one runs."""
    backend = get_backend("numpy")
    one_by_one = best_of(lambda: sum(backend.train(i).train_seconds for i in runs), repeats)
    single = np.stack([backend.train(i).losses for i in runs])
    seconds = best_of(lambda: batched_numpy_gd(runs)[1], repeats)
    losses, _ = batched_numpy_gd(runs)
    spec = runs[0].spec
    return {"framework": "numpy", "how": "the reference's GD formulas with a leading run axis "
                                         "(batched matmul / einsum)",
            "runs": len(runs), "width": spec.model.width, "n": spec.task.n_train,
            "steps": spec.total_steps, "dtype": spec.dtype, "one_by_one_seconds": one_by_one,
            "batched_seconds": seconds, "batched_compile_seconds": 0.0,
            "speedup": one_by_one / seconds,
            "max_rel_loss_deviation": float(np.max(np.abs(losses - single) / np.abs(single)))}


# ---------------------------------------------------------------------------- the pipeline


def time_pipeline(grid: str, results: Path, cores: int = 2) -> dict:
    """Wall seconds of ``snakemake -c<cores> --config grid=<grid> results=<results>`` from an
    empty results folder (run from the repository root, with this interpreter's snakemake).
    ``--nolock``: the outputs are a private folder, and a lock would stop a concurrent run of
    the user's own pipeline in the same working directory."""
    snakemake = Path(sys.executable).parent / "snakemake"
    cmd = [str(snakemake), f"-c{cores}", "--nolock", "--config", f"grid={grid}",
           f"results={results}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return {"grid": grid, "command": " ".join(["snakemake", *cmd[1:]]), "seconds": seconds,
            "returncode": done.returncode,
            "tail": "" if done.returncode == 0 else done.stderr[-2000:]}
