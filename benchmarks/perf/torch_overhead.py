"""Fixed cost of one call of the torch backend's compiled loss, forward and backward, at a tiny
and at the reference size (1 thread): ``python -m benchmarks.perf.torch_overhead``.

Where the tiny size costs nearly as much as the reference size, the torch step is dominated by
per-call overhead (Dynamo guards, the AOTAutograd wrapper, the autograd engine), not by
arithmetic. Prints microseconds per call, best of 3 rounds of 300 calls.
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
    import torch

    from hrta.backends import torch_backend as tb

    torch.set_num_threads(1)
    loss = torch.compile(tb._loss, fullgraph=True, dynamic=False)
    for m, n in ((10, 10), (1000, 100)):
        for dt in (torch.float64, torch.float32):
            W, b, a = (torch.randn(*shape, dtype=dt, requires_grad=True)
                       for shape in ((m, 1), (m,), (m,)))
            X, y = torch.randn(n, 1, dtype=dt), torch.randn(n, dtype=dt)
            s, root_m = torch.tensor(0.5, dtype=dt), torch.tensor(math.sqrt(m), dtype=dt)
            with torch.no_grad():
                forward = per_call(lambda: loss(W, b, a, X, y, s, root_m))  # noqa: B023
            both = per_call(lambda: loss(W, b, a, X, y, s, root_m).backward())  # noqa: B023
            print(f"width {m:5d}  n {n:4d}  {str(dt):14s} forward {forward:6.0f} us  "
                  f"forward+backward {both:6.0f} us", flush=True)


if __name__ == "__main__":
    main()
