"""Function-fitting tasks of HRTA-SPEC.md section 9, in a registry a user can extend.

A task is a target f*: R^d -> R on a box domain. ``sample_task`` draws training and test sets
exactly as the spec says: one-dimensional tasks train on equispaced points including both ends;
the others draw training points uniformly; test points always come uniformly from a stream
separate from the training points; optional noise N(0, noise^2) is added to training targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Target = Callable[[np.ndarray], np.ndarray]
"""Maps X of shape (n, d), float64, to y of shape (n,), float64."""

TEACHER_SEED = 1234
TEACHER_WIDTH = 32


@dataclass(frozen=True)
class Task:
    name: str
    dim: int
    low: float
    high: float
    target: Target
    description: str = ""
    equispaced_train: bool | None = None  # None: equispaced exactly when dim == 1

    @property
    def uses_grid(self) -> bool:
        return self.dim == 1 if self.equispaced_train is None else self.equispaced_train


TASKS: dict[str, Task] = {}


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add a task to the registry (used by run specs through its name)."""
    if task.name in TASKS and not replace:
        raise ValueError(f"task {task.name!r} is already registered")
    if task.dim < 1 or not task.high > task.low:
        raise ValueError(f"task {task.name!r}: need dim >= 1 and high > low")
    TASKS[task.name] = task
    return task


def _sin1d(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * x[:, 0])


def _multiscale1d(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * x[:, 0]) + 0.25 * np.sin(16 * np.pi * x[:, 0])


def _abs1d(x: np.ndarray) -> np.ndarray:
    return np.abs(x[:, 0])


def _sin2d(x: np.ndarray) -> np.ndarray:
    return np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1])


def franke(x: np.ndarray) -> np.ndarray:
    """Franke's function (Franke 1979), the standard four-exponential form on [0, 1]^2."""
    u, v = 9 * x[:, 0], 9 * x[:, 1]
    return (0.75 * np.exp(-((u - 2) ** 2) / 4 - ((v - 2) ** 2) / 4)
            + 0.75 * np.exp(-((u + 1) ** 2) / 49 - (v + 1) / 10)
            + 0.5 * np.exp(-((u - 7) ** 2) / 4 - ((v - 3) ** 2) / 4)
            - 0.2 * np.exp(-((u - 4) ** 2) - (v - 7) ** 2))


def _friedman1(x: np.ndarray) -> np.ndarray:
    return (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2
            + 10 * x[:, 3] + 5 * x[:, 4]) / 10


def teacher_weights(dim: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed teacher's (W, b, a): width 32, N(0, 1) entries from seed 1234, drawn W, b, a in
    that order, independent of any run's seed."""
    rng = np.random.default_rng(TEACHER_SEED)
    w = rng.standard_normal((TEACHER_WIDTH, dim))
    b = rng.standard_normal(TEACHER_WIDTH)
    a = rng.standard_normal(TEACHER_WIDTH)
    return w, b, a


def _teacher(x: np.ndarray) -> np.ndarray:
    w, b, a = teacher_weights(x.shape[1])
    return np.maximum(x @ w.T + b, 0.0) @ a / np.sqrt(TEACHER_WIDTH)


for _task in (
    Task("sin1d", 1, -1.0, 1.0, _sin1d, "sin(2 pi x)"),
    Task("multiscale1d", 1, -1.0, 1.0, _multiscale1d, "sin(2 pi x) + 0.25 sin(16 pi x)"),
    Task("abs1d", 1, -1.0, 1.0, _abs1d, "|x|"),
    Task("sin2d", 2, -1.0, 1.0, _sin2d, "sin(pi x1) sin(pi x2)"),
    Task("franke2d", 2, 0.0, 1.0, franke, "Franke's function"),
    Task("friedman1", 5, 0.0, 1.0, _friedman1,
         "(10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5) / 10"),
    Task("teacher", 4, -1.0, 1.0, _teacher, "width-32 ReLU teacher (seed 1234)"),
):
    register_task(_task)


@dataclass(frozen=True)
class TaskData:
    """Float64 arrays: X_train (n_train, d), y_train (n_train,), X_test (n_test, d),
    y_test (n_test,)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def sample_task(task: Task, n_train: int, n_test: int, noise: float,
                rng_train: np.random.Generator, rng_test: np.random.Generator,
                rng_noise: np.random.Generator) -> TaskData:
    """Training and test sets of ``task`` (spec section 9), from three independent streams."""
    if task.uses_grid:
        if task.dim != 1:
            raise ValueError("equispaced training points are defined for d = 1 only")
        x_train = np.linspace(task.low, task.high, n_train)[:, None]
    else:
        x_train = rng_train.uniform(task.low, task.high, size=(n_train, task.dim))
    x_test = rng_test.uniform(task.low, task.high, size=(n_test, task.dim))
    y_train = np.asarray(task.target(x_train), dtype=np.float64)
    if noise > 0:
        y_train = y_train + rng_noise.normal(0.0, noise, size=n_train)
    y_test = np.asarray(task.target(x_test), dtype=np.float64)
    return TaskData(x_train, y_train, x_test, y_test)
