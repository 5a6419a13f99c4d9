"""The backend interface: small and framework-neutral.

A backend turns a run's :class:`~hrta.inputs.Inputs` (which carry the validated spec) into a
:class:`TrainResult`. It draws no random numbers, reads and writes no files and knows nothing
of Snakemake; :mod:`hrta.run` turns its result into the run folder of HRTA-SPEC.md section 7.

Backends are found through the ``hrta.backends`` entry-point group (see
:mod:`hrta.backends.registry`). A backend module must import without its framework installed:
import the framework inside the methods, so that discovery never crashes and a missing
framework is reported with ``install_hint``.

Divergence contract, the same for every backend: at global step k (0..K) the backend evaluates
L_k = L_{s_k}(theta_k) on the full training set (s_{K-1} for k = K). The first k at which L_k or
any entry of theta_k is not finite is the divergence step; the run stops there (no update is
applied at or after it) and ``params`` are theta at that step.
"""

from __future__ import annotations

import importlib.util
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hrta.inputs import Inputs

Params = dict[str, np.ndarray]
Progress = Callable[[int], None]
"""Called with the number of training steps completed so far (monotone, ends at K or at the
divergence step)."""


@dataclass
class TrainResult:
    """What a backend returns.

    losses: float64, shape (k_end + 1,): L_k for k = 0..k_end, where k_end = K for a finished
        run and k_end = diverged_step for a diverged one.
    params: final W (m, d), b (m,), a (m,) as NumPy arrays in the run's dtype (theta_{k_end}).
    compile_seconds: one-off tracing/compilation time, kept out of train_seconds.
    train_seconds: wall-clock seconds of the training loop proper.
    """

    losses: np.ndarray
    params: Params
    diverged_step: int | None
    compile_seconds: float
    train_seconds: float
    device: str = "cpu"
    details: dict = field(default_factory=dict)  # native vs hand-written parts, settings, ...

    @property
    def steps_run(self) -> int:
        """Optimizer steps applied (= gradient evaluations)."""
        return len(self.losses) - 1


class BackendUnavailable(RuntimeError):
    """The backend's framework is not installed; the message says how to install it."""


class Backend:
    """Base class of a backend; subclasses set the class attributes and implement the three
    compute methods. ``framework`` is the import name whose presence makes it available."""

    name: str = ""
    framework: str = ""
    install_hint: str = ""
    description: str = ""

    def is_available(self) -> bool:
        return not self.framework or importlib.util.find_spec(self.framework) is not None

    def require(self) -> None:
        if not self.is_available():
            raise BackendUnavailable(
                f"backend {self.name!r} needs {self.framework}, which is not installed; "
                f"install it with: {self.install_hint}")

    def versions(self) -> dict[str, str]:
        """Library versions the backend computes with (always includes numpy and python)."""
        return {"python": platform.python_version(), "numpy": np.__version__}

    # ---- compute, in the dtype of the arrays given --------------------------------------
    def forward(self, params: Params, X: np.ndarray, s: float) -> np.ndarray:
        """f_s(X), shape (n,), in the dtype of X."""
        raise NotImplementedError

    def loss_and_grad(self, params: Params, X: np.ndarray, y: np.ndarray, s: float,
                      trainable: tuple[str, ...]) -> tuple[float, Params]:
        """L_s on (X, y) and its gradient with respect to ``trainable`` (framework autodiff)."""
        raise NotImplementedError

    def train(self, inputs: Inputs, progress: Progress | None = None) -> TrainResult:
        """Run the whole training of HRTA-SPEC.md section 5 on ``inputs``."""
        raise NotImplementedError


def first_divergence(losses: np.ndarray, params_finite: np.ndarray) -> int | None:
    """Index of the first step whose loss or parameters are not finite, or None.
    ``params_finite`` is bool with the same length as ``losses``."""
    bad = ~np.isfinite(losses) | ~params_finite
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None
