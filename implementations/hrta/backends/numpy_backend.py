"""The NumPy reference backend: the spec's arithmetic written out, step by step, with the
hand-derived gradients of :mod:`hrta.model` and the update rules of :mod:`hrta.optim`.

It is the ground truth of every agreement check, so it is written for clarity, not speed: a
plain Python loop, one step at a time, stopping at the first non-finite loss or parameter.
"""

from __future__ import annotations

import time

import numpy as np

from hrta import model, optim
from hrta.backends.base import Backend, Progress, TrainResult
from hrta.inputs import Inputs

PROGRESS_EVERY = 100


class NumpyBackend(Backend):
    name = "numpy"
    framework = "numpy"
    install_hint = "pip install numpy"
    description = "float64 reference: hand-derived gradients, plain loop"

    def forward(self, params, X, s):
        return model.forward(params, X, s)

    def loss_and_grad(self, params, X, y, s, trainable):
        value, grads = model.loss_and_grad(params, X, y, s, trainable)
        return float(value), grads

    # Overflow on the way to divergence is expected: it is detected and recorded below, so
    # NumPy's RuntimeWarnings would only be noise on the user's terminal.
    @np.errstate(over="ignore", invalid="ignore")
    def train(self, inputs: Inputs, progress: Progress | None = None) -> TrainResult:
        spec = inputs.spec
        trainable = spec.model.train
        opt = optim.from_spec(spec.optimizer)
        params = inputs.initial_params()
        X, y = inputs.X_train, inputs.y_train
        steps = spec.total_steps
        reset = inputs.reset
        state = opt.init({k: params[k] for k in trainable})
        losses = np.empty(steps + 1, dtype=np.float64)
        diverged = None
        start = time.perf_counter()
        for k in range(steps + 1):
            s_k = inputs.s[min(k, steps - 1)]
            if inputs.batches is None:  # the full-batch gradient comes with the loss
                full_loss, grads = model.loss_and_grad(params, X, y, s_k, trainable)
            else:
                full_loss = model.loss(params, X, y, s_k)
            losses[k] = full_loss
            if not np.isfinite(full_loss) or not all(np.all(np.isfinite(v))
                                                     for v in params.values()):
                diverged = k
                break
            if k == steps:
                break
            if reset[k]:
                state = opt.init({key: params[key] for key in trainable})
            if inputs.batches is not None:
                idx = inputs.batches[k]
                _, grads = model.loss_and_grad(params, X[idx], y[idx], s_k, trainable)
            trained, state = opt.update(grads, state, {key: params[key] for key in trainable},
                                        inputs.lr[k])
            params = {**params, **trained}
            if progress is not None and (k + 1) % PROGRESS_EVERY == 0:
                progress(k + 1)
        seconds = time.perf_counter() - start
        end = diverged if diverged is not None else steps
        if progress is not None:
            progress(end)
        return TrainResult(losses=losses[: end + 1], params=params, diverged_step=diverged,
                           compile_seconds=0.0, train_seconds=seconds, device="cpu",
                           details={"loop": "python", "gradients": "hand-derived",
                                    "optimizer": "hrta.optim (spec formulas)"})
