"""Fixed cost of one call of the torch backend's compiled training step (forward, gradient and
optimizer update in one graph), at a tiny and at the reference size (1 thread):
``python -m benchmarks.perf.torch_overhead``.

Where the tiny size costs nearly as much as the reference size, the torch step is dominated by
per-call overhead (Dynamo's guards, the AOTAutograd wrapper, inductor's buffer allocation), not
by arithmetic. Each step is timed both as the backend calls it (the compiled graph directly)
and through Dynamo's guarded entry point. Prints microseconds per call, best of 3 rounds of
300 calls.
"""

from __future__ import annotations

import math
import time


def per_call(fn, calls: int = 300, rounds: int = 3) -> float:
    fn()
    fn()
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    from benchmarks.perf import measure
    from hrta.backends import torch_backend as tb
    from hrta.inputs import build_inputs

    for m, n in ((10, 10), (1000, 100)):
        for optimizer in ("sgd", "adam"):
            for dtype in ("float64", "float32"):
                inputs = build_inputs(measure.make_spec(m, n, 10, optimizer, dtype))
                with tb._settings():
                    trainer = tb._Trainer(inputs, compile=True)
                    trainer.compile()
                    args = trainer.args(0, trainer.params, trainer.state)
                    direct = per_call(lambda: trainer.fn(*args))  # noqa: B023
                    guarded = per_call(lambda: trainer.compiled.guarded(*args))  # noqa: B023
                print(f"width {m:5d}  n {n:4d}  {optimizer:4s} {dtype:8s} step {direct:6.0f} us "
                      f"(called directly), {guarded:6.0f} us (through Dynamo's guards)",
                      flush=True)


if __name__ == "__main__":
    main()
