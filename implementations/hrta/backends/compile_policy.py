"""When a backend compiles a run's training loop: when compiling pays for itself in that run.

Compiling a training step (torch.compile, XLA) costs a fixed time per program structure and
then makes every step several times faster. A short run's uncompiled loop finishes before
the compiler would (the smoke grid's 40-step runs: milliseconds against seconds), a long or
wide run's does not. So the torch and TensorFlow backends decide per run, from a cost model
of their uncompiled loop measured on this machine (the constants and measurements are in
each backend's module):

    uncompiled seconds = K (step_seconds + entry_seconds n_train width)

and compile when that exceeds ``compile_seconds``, one compilation. The decision is a function
of the spec alone, never of what the process ran before, because compiled and uncompiled
loops round differently in float32; ``TrainResult.details`` records it. An environment
variable chooses: ``auto`` (decide by the model), ``1`` (always compile) or ``0`` (never);
unset, the backend's ``default`` applies (auto for torch; always for TensorFlow, whose
uncompiled graph is less accurate in float32 on some runs, see docs/backends.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hrta.spec import RunSpec

AUTO = "auto"
ALWAYS = ("1", "true", "yes", "on", "always")
NEVER = ("0", "false", "no", "off", "never")


@dataclass(frozen=True)
class CompilePolicy:
    """The cost model of one backend's uncompiled loop and the variable that overrides it.

    env: the environment variable (auto, 1 or 0).
    step_seconds: seconds per uncompiled step, fixed part (the dispatch of its small ops).
    entry_seconds: seconds per uncompiled step per entry of the n_train x width intermediates.
    compile_seconds: seconds one compilation of the step costs.
    compiler: what compiling means for this backend, for the recorded decision.
    default: the choice when the variable is unset: "auto", "1" or "0".
    """

    env: str
    step_seconds: float
    entry_seconds: float
    compile_seconds: float
    compiler: str
    default: str = AUTO

    def uncompiled_seconds(self, spec: RunSpec) -> float:
        """The estimated wall time of the run's training loop uncompiled."""
        entries = spec.task.n_train * spec.model.width
        return spec.total_steps * (self.step_seconds + self.entry_seconds * entries)

    def pays(self, spec: RunSpec) -> bool:
        """Whether compiling is expected to pay for itself within this run."""
        return self.uncompiled_seconds(spec) > self.compile_seconds

    def mode(self, choice: bool | str | None = None) -> bool | str:
        """True, False or "auto": ``choice`` if given (a backend's constructor argument),
        else the environment variable, else ``default``."""
        if choice is not None:
            if choice not in (True, False, AUTO):
                raise ValueError(f"compile: expected True, False or 'auto', got {choice!r}")
            return choice
        value = os.environ.get(self.env)
        text = (self.default if value is None else value).strip().lower()
        if text in ("", AUTO):
            return AUTO
        if text in ALWAYS:
            return True
        if text in NEVER:
            return False
        raise ValueError(f"{self.env}: expected auto, 1 (always compile) or 0 (never), "
                         f"got {value!r}")

    def decide(self, spec: RunSpec, choice: bool | str | None = None) -> tuple[bool, str]:
        """(compile this run?, why, for ``TrainResult.details["compile_policy"]``)."""
        mode = self.mode(choice)
        value = os.environ.get(self.env)
        source = (f"compile={choice!r}" if choice is not None else
                  f"{self.env}={value}" if value is not None else
                  f"{self.env} unset, default {self.default}")
        if mode != AUTO:
            return mode, f"{self.compiler} {'always' if mode else 'never'} ({source})"
        estimate, pays = self.uncompiled_seconds(spec), self.pays(spec)
        return pays, (f"{source}: the uncompiled loop's estimated {estimate:.3g} s "
                      f"{'exceed' if pays else 'are within'} one compilation "
                      f"({self.compile_seconds:g} s), so "
                      f"{self.compiler + ' used' if pays else 'not compiled'}")
