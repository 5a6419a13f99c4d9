"""The backend conformance suite: a table of cases and the checks that hold any registered
backend against the NumPy reference, written once for every backend, third-party ones
included.

The pytest tests (``hrta.conformance_suite``, collected through ``tests/test_conformance.py``
or run by ``hrta conformance --backend NAME``) are thin wrappers over the functions here; each
check raises :class:`ConformanceError` whose message names the backend, the case, the step and
the error, and returns the deviation it measured.

Cases (all small: width 64, 64 training points, so that the whole suite stays fast):

* ``forward`` / ``gradient``: f_s(X) and the gradient of L_s at the initial parameters, for
  s in {0, 0.5, 1, 1.5, 2}, d = 1 and d = 5, float64 and float32, against
  :mod:`hrta.model`'s hand-derived gradients (all parameters trained, and the output layer
  frozen).
* ``one_step``: the losses and parameters after one step of every optimizer (float64).
* ``trajectory``: whole runs through :func:`hrta.run.execute`, every step logged and compared
  with :func:`hrta.compare.compare_pair`: every optimizer x lr schedule x stage kind x dtype
  (24 steps), plus long runs (300 steps, where the float64 1e-9 target matters), a frozen
  output layer, random features (only a trained), minibatches, Rademacher init and a
  five-dimensional task.
* ``divergence``: a huge lr must diverge at the same step as the reference.
* ``determinism``: two runs of the same spec give bitwise-identical losses and parameters.

The reference's results are computed once per process and shared by every backend under test.
Tolerances come from :mod:`hrta.tolerances`; ``hrta conformance --backend NAME --measure``
prints the deviations a backend actually reaches.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from hrta import compare, tolerances
from hrta.backends import registry
from hrta.backends.base import Backend
from hrta.inputs import Inputs, build_inputs
from hrta.spec import RunSpec, parse_spec

WIDTH = 64
N_TRAIN = 64
N_TEST = 16
MATRIX_STEPS = 24
LONG_STEPS = 300

OPTIMIZERS: dict[str, dict] = {
    "sgd": {"name": "sgd", "lr": 0.5},
    "momentum": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
    "nesterov": {"name": "sgd", "lr": 0.2, "momentum": 0.9, "nesterov": True},
    "adam": {"name": "adam", "lr": 0.01},
}
"""Learning rates inside the stable regime of the tolerances' derivation."""

SCHEDULES = ("constant", "step", "multistep", "exponential", "cosine")
STAGE_KINDS = ("constant", "ramp", "multistage")
DTYPES = ("float64", "float32")
S_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0)


class ConformanceError(AssertionError):
    """A backend disagrees with the reference; the message says where and by how much."""


def lr_schedule(name: str, steps: int, lr: float) -> dict:
    """An lr schedule of each kind that changes the lr within ``steps`` steps."""
    return {"constant": {"name": "constant"},
            "step": {"name": "step", "step_size": max(1, steps // 4), "gamma": 0.5},
            "multistep": {"name": "multistep", "milestones": [steps // 3, 2 * steps // 3],
                          "gamma": 0.5},
            "exponential": {"name": "exponential", "gamma": 0.98},
            "cosine": {"name": "cosine", "eta_min": lr / 10}}[name]


def homotopy(kind: str, steps: int) -> tuple[list[dict], bool]:
    """(stages, reset_optimizer_each_stage) of each stage kind, ``steps`` steps in all. The
    ramp runs over the whole range s = 0 .. 2 (linear to |z|)."""
    if kind == "constant":
        return [{"s": 1.5, "steps": steps}], False
    if kind == "ramp":
        return [{"s_from": 0.0, "s_to": 2.0, "steps": steps}], False
    third = steps // 3
    return [{"s": 0.5, "steps": third}, {"s_from": 0.5, "s_to": 1.5, "steps": third},
            {"s": 1.5, "steps": steps - 2 * third}], True


def make_spec(*, optimizer: str = "sgd", schedule: str = "constant", stages: str = "constant",
              dtype: str = "float64", steps: int = MATRIX_STEPS, task: str = "sin1d",
              **extra) -> dict:
    """A conformance run-spec document; ``extra`` overrides top-level keys (model, lr, ...)."""
    opt = dict(OPTIMIZERS[optimizer])
    if "lr" in extra:
        opt["lr"] = extra.pop("lr")
    homotopy_stages, reset = homotopy(stages, steps)
    doc = {"task": {"name": task, "n_train": N_TRAIN, "n_test": N_TEST},
           "model": {"width": WIDTH}, "homotopy": homotopy_stages, "optimizer": opt,
           "lr_schedule": lr_schedule(schedule, steps, opt["lr"]), "batch_size": None,
           "reset_optimizer_each_stage": reset, "seed": 0, "dtype": dtype, "log_every": 1}
    doc.update(extra)
    return doc


@dataclass(frozen=True)
class Case:
    """One conformance run: ``id`` names it in test ids and failure messages."""

    id: str
    spec: dict

    @property
    def run_spec(self) -> RunSpec:
        return parse_spec(self.spec)


MINIBATCH = 16


def matrix_cases() -> list[Case]:
    """Every optimizer x lr schedule x stage kind x dtype, MATRIX_STEPS steps each."""
    return [Case(f"{opt}-{sched}-{stage}-{dtype}",
                 make_spec(optimizer=opt, schedule=sched, stages=stage, dtype=dtype))
            for dtype in DTYPES for opt in OPTIMIZERS for sched in SCHEDULES
            for stage in STAGE_KINDS]


def special_cases() -> list[Case]:
    """Long runs and the features outside the matrix.

    Compiling backends compile once per program structure (dtype, optimizer, trainable set,
    shapes, batch size, step count), which costs seconds, while s_k, lr_k and the resets are
    data. So each feature is tested in few structures, and in both dtypes between its cases:
    the long runs (the float64 1e-9 target over LONG_STEPS steps) for every optimizer in
    float64 and for Adam, the most perturbation-sensitive, in float32.
    """
    frozen = {"width": WIDTH, "train": ["W", "b"]}
    table = [
        *[(f"long-{opt}-cosine-multistage-float64",
           {"optimizer": opt, "schedule": "cosine", "stages": "multistage",
            "steps": LONG_STEPS}) for opt in OPTIMIZERS],
        ("long-adam-cosine-multistage-float32",
         {"optimizer": "adam", "schedule": "cosine", "stages": "multistage",
          "steps": LONG_STEPS, "dtype": "float32"}),
        ("frozen-output-adam-float64", {"optimizer": "adam", "stages": "ramp", "model": frozen}),
        ("frozen-output-momentum-float32",
         {"optimizer": "momentum", "stages": "multistage", "dtype": "float32", "model": frozen}),
        ("random-features-sgd-float64",
         {"optimizer": "sgd", "schedule": "cosine", "model": {"width": WIDTH, "train": ["a"]}}),
        ("rademacher-momentum-float64",
         {"optimizer": "momentum", "stages": "ramp",
          "model": {"width": WIDTH, "init_a": "rademacher"}}),
        ("friedman1-adam-float64", {"optimizer": "adam", "stages": "multistage",
                                    "task": "friedman1"}),
        ("friedman1-momentum-minibatch-float32",
         {"optimizer": "momentum", "stages": "ramp", "task": "friedman1",
          "batch_size": MINIBATCH, "dtype": "float32"}),
    ]
    cases = [Case(case_id, make_spec(**kwargs)) for case_id, kwargs in table]
    cases += [Case(f"minibatch-{opt}-{dtype}", _minibatch_spec(opt, dtype))
              for opt, dtype in MINIBATCH_RUNS]
    return cases


def trajectory_cases() -> list[Case]:
    return matrix_cases() + special_cases()


def divergence_cases() -> list[Case]:
    """Huge learning rates: the loss overflows within a few steps in both dtypes."""
    return [Case(f"diverge-{opt}-lr{lr:g}-{dtype}",
                 make_spec(optimizer=opt, dtype=dtype, lr=lr))
            for dtype in DTYPES for opt, lr in (("sgd", 50.0), ("momentum", 20.0))]


def _minibatch_spec(optimizer: str, dtype: str) -> dict:
    """Minibatches, optimizer resets, a ramp and a cosine lr at once."""
    return make_spec(optimizer=optimizer, dtype=dtype, schedule="cosine", stages="multistage",
                     batch_size=MINIBATCH)


MINIBATCH_RUNS = (("nesterov", "float64"), ("adam", "float32"))


def determinism_cases() -> list[Case]:
    """Two runs of each must be bitwise identical. The specs are also trajectory cases
    (``minibatch-*``), so compiling backends reuse their programs."""
    return [Case(f"determinism-{opt}-{dtype}", _minibatch_spec(opt, dtype))
            for opt, dtype in MINIBATCH_RUNS]


def one_step_cases() -> list[Case]:
    """One step of every optimizer, in float64 (the matrix runs cover float32 steps)."""
    return [Case(f"one-step-{opt}-float64", make_spec(optimizer=opt, steps=1))
            for opt in OPTIMIZERS]


@dataclass(frozen=True)
class PointCase:
    """A single evaluation at the initial parameters of ``task`` in ``dtype``."""

    id: str
    task: str
    dtype: str
    trainable: tuple[str, ...] = ("W", "b", "a")


def point_cases() -> list[PointCase]:
    return [PointCase(f"{task}-{'all' if len(train) == 3 else 'frozen-a'}-{dtype}", task, dtype,
                      train)
            for dtype in DTYPES for task in ("sin1d", "friedman1")
            for train in (("W", "b", "a"), ("W", "b"))]


# ---------------------------------------------------------------------------- the reference


@cache
def _inputs(spec_json: str) -> Inputs:
    return build_inputs(parse_spec(json.loads(spec_json)))


def inputs_for(case: Case) -> Inputs:
    """The case's inputs (built once per process and shared; backends must not modify them)."""
    return _inputs(json.dumps(case.spec, sort_keys=True))


@cache
def _reference_outcome(spec_json: str):
    from hrta import run

    inputs = _inputs(spec_json)
    with np.errstate(all="ignore"):
        return run.execute(registry.get_backend(registry.REFERENCE), inputs)


def reference_outcome(case: Case):
    """The reference's RunOutcome of a case, computed once per process."""
    return _reference_outcome(json.dumps(case.spec, sort_keys=True))


def _where(backend: Backend, case_id: str) -> str:
    return f"backend {backend.name!r}, case {case_id}"


def _nrel(got: np.ndarray, ref: np.ndarray) -> float:
    """Normwise relative difference ||got - ref|| / ||ref|| (float64 arithmetic)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(compare.relative(np.array([np.linalg.norm(got - ref)]),
                                  np.array([np.linalg.norm(ref)]))[0])


def _check_array(backend: Backend, case_id: str, what: str, got, ref: np.ndarray,
                 tol: tolerances.Tolerance) -> float:
    """Shape, dtype and normwise closeness of one array; returns the relative difference."""
    got = np.asarray(got)
    where = _where(backend, case_id)
    if got.shape != ref.shape:
        raise ConformanceError(f"{where}: {what} has shape {got.shape}, expected {ref.shape}")
    if got.dtype != ref.dtype:
        raise ConformanceError(f"{where}: {what} has dtype {got.dtype}, expected {ref.dtype} "
                               f"(a run computes in its spec's dtype)")
    rel = _nrel(got, ref)
    if not rel <= tol.rtol:
        raise ConformanceError(f"{where}: {what} differs from the reference by {rel:.3g} "
                               f"(normwise relative) > {tol.name} tolerance {tol.rtol:.3g} "
                               f"[{tol.basis}]")
    return rel


# ---------------------------------------------------------------------------- checks


def _point_inputs(case: PointCase) -> Inputs:
    spec = make_spec(optimizer="sgd", dtype=case.dtype, steps=1, task=case.task,
                     model={"width": WIDTH, "train": list(case.trainable)})
    return inputs_for(Case(case.id, spec))


def check_forward(backend: Backend, case: PointCase) -> float:
    """f_s(X_train) at the initial parameters for every s in S_VALUES; the worst deviation."""
    from hrta import model

    inputs = _point_inputs(case)
    tol = tolerances.for_inputs_check(inputs.spec)["forward"]
    worst = 0.0
    for s in S_VALUES:
        ref = model.forward(inputs.initial_params(), inputs.X_train, s)
        got = backend.forward(inputs.initial_params(), inputs.X_train.copy(), s)
        worst = max(worst, _check_array(backend, f"{case.id} (s={s})", "f_s(X)", got, ref, tol))
    return worst


def check_gradient(backend: Backend, case: PointCase) -> float:
    """L_s and its gradient at the initial parameters, for every s, against the reference's
    hand-derived gradient; the worst deviation."""
    from hrta import model

    inputs = _point_inputs(case)
    tol = tolerances.for_inputs_check(inputs.spec)["gradient"]
    worst = 0.0
    for s in S_VALUES:
        where = f"{case.id} (s={s})"
        ref_loss, ref_grads = model.loss_and_grad(inputs.initial_params(), inputs.X_train,
                                                  inputs.y_train, s, case.trainable)
        loss, grads = backend.loss_and_grad(inputs.initial_params(), inputs.X_train.copy(),
                                            inputs.y_train.copy(), s, case.trainable)
        if set(grads) != set(case.trainable):
            raise ConformanceError(f"{_where(backend, where)}: gradients returned for "
                                   f"{sorted(grads)}, expected exactly {sorted(case.trainable)}")
        rel = abs(float(loss) - float(ref_loss)) / abs(float(ref_loss))
        if not rel <= tol.rtol:
            raise ConformanceError(f"{_where(backend, where)}: loss {float(loss)!r} vs reference "
                                   f"{float(ref_loss)!r}: relative difference {rel:.3g} > "
                                   f"{tol.rtol:.3g} [{tol.basis}]")
        worst = max(worst, rel)
        for name in case.trainable:
            worst = max(worst, _check_array(backend, where, f"dL/d{name}", grads[name],
                                            ref_grads[name], tol))
    return worst


class _Recording(Backend):
    """Passes ``train`` through to a backend and keeps the dtypes of the parameters it
    returned, before :func:`hrta.run.execute` casts them to the run's dtype."""

    def __init__(self, inner: Backend):
        self.inner, self.name, self.framework = inner, inner.name, inner.framework
        self.param_dtypes: dict[str, np.dtype] = {}

    def versions(self) -> dict[str, str]:
        return self.inner.versions()

    def train(self, inputs, progress=None):
        result = self.inner.train(inputs, progress)
        self.param_dtypes = {k: np.asarray(v).dtype for k, v in result.params.items()}
        return result


def _execute(backend: Backend, case: Case):
    """run.execute of the case on the backend; a crash, or final parameters in another dtype
    than the run's, is a ConformanceError."""
    from hrta import run

    recording = _Recording(backend)
    with np.errstate(all="ignore"):
        try:
            outcome = run.execute(recording, inputs_for(case))
        except Exception as err:
            raise ConformanceError(f"{_where(backend, case.id)}: training failed: "
                                   f"{type(err).__name__}: {err}") from err
    want = inputs_for(case).dtype
    for name, dtype in recording.param_dtypes.items():
        if dtype != want:
            raise ConformanceError(f"{_where(backend, case.id)}: returned final parameter "
                                   f"{name} as {dtype}, expected {want} (the run's dtype)")
    return outcome


def check_one_step(backend: Backend, case: Case) -> float:
    """Parameters and both losses of a one-step run against the reference's."""
    inputs = inputs_for(case)
    tol = tolerances.for_inputs_check(inputs.spec)["one_step"]
    ref = reference_outcome(case).result
    got = _execute(backend, case).result
    worst = 0.0
    for k in (0, 1):
        rel = abs(got.losses[k] - ref.losses[k]) / abs(ref.losses[k])
        if not rel <= tol.rtol:
            have, want = float(got.losses[k]), float(ref.losses[k])
            raise ConformanceError(f"{_where(backend, case.id)}: train_loss at step {k}: "
                                   f"{have!r} vs reference {want!r}, relative difference "
                                   f"{rel:.3g} > {tol.rtol:.3g} [{tol.basis}]")
        worst = max(worst, rel)
    for name in ("W", "b", "a"):
        worst = max(worst, _check_array(backend, case.id, f"parameter {name} after step 1",
                                        got.params[name], ref.params[name], tol))
    return worst


def check_trajectory(backend: Backend, case: Case) -> compare.RunComparison:
    """A whole run, every step's train_loss and the final parameters, against the reference
    with the default tolerances of :mod:`hrta.tolerances`."""
    ref = compare.RunView.from_outcome(reference_outcome(case), label="reference")
    outcome = _execute(backend, case)
    got = compare.RunView.from_outcome(outcome, label=backend.name)
    result = compare.compare_pair(ref, got)
    if not result.ok:
        raise ConformanceError(f"{_where(backend, case.id)}: {result.failure_message()}")
    return result


def check_divergence(backend: Backend, case: Case) -> compare.RunComparison:
    """The run must diverge, at the reference's step, agreeing with it until then."""
    ref_outcome = reference_outcome(case)
    if ref_outcome.result.diverged_step is None:
        raise ConformanceError(f"case {case.id}: the reference did not diverge; the case is "
                               f"broken, not the backend {backend.name!r}")
    result = check_trajectory(backend, case)
    if result.diverged is None:
        raise ConformanceError(f"{_where(backend, case.id)}: did not diverge; the reference "
                               f"diverged at step {ref_outcome.result.diverged_step}")
    return result


def check_determinism(backend: Backend, case: Case) -> None:
    """Two runs of the same spec: bitwise-identical losses and final parameters."""
    first, second = _execute(backend, case).result, _execute(backend, case).result
    where = _where(backend, case.id)
    if first.losses.shape != second.losses.shape:
        raise ConformanceError(f"{where}: the two runs took {first.steps_run} and "
                               f"{second.steps_run} steps")
    bits = [np.asarray(r.losses, np.float64).view(np.uint64) for r in (first, second)]
    differ = np.flatnonzero(bits[0] != bits[1])  # bitwise: NaN == NaN, 0.0 != -0.0
    if differ.size:
        k = int(differ[0])
        raise ConformanceError(f"{where}: train_loss at step {k} differs between two runs: "
                               f"{float(first.losses[k])!r} vs {float(second.losses[k])!r}")
    for name in ("W", "b", "a"):
        a, b = np.asarray(first.params[name]), np.asarray(second.params[name])
        if a.dtype != b.dtype or a.tobytes() != b.tobytes():
            raise ConformanceError(f"{where}: final parameter {name} differs between two runs "
                                   f"(max abs diff {np.max(np.abs(a - b)):.3g})")


# ---------------------------------------------------------------------------- pytest glue


def add_pytest_options(parser) -> None:
    """``--backend NAME`` (repeatable) for the conformance tests."""
    parser.addoption("--backend", action="append", default=[], metavar="NAME",
                     help="run the conformance suite on this registered backend (repeatable; "
                          "default: every registered backend)")


def parametrize_backends(metafunc) -> None:
    """Parametrise a test that asks for ``backend_name`` over the chosen backends."""
    if "backend_name" not in metafunc.fixturenames:
        return
    import pytest

    chosen = metafunc.config.getoption("backend") or registry.backend_names()
    known = registry.backend_names()
    for name in chosen:
        if name not in known:
            raise pytest.UsageError(f"--backend: unknown backend {name!r}; registered: "
                                    f"{', '.join(known)}")
    metafunc.parametrize("backend_name", list(dict.fromkeys(chosen)))


class PytestPlugin:
    """The hooks above as a plugin object, for ``pytest.main(plugins=[...])``."""

    def pytest_addoption(self, parser):
        add_pytest_options(parser)

    def pytest_generate_tests(self, metafunc):
        parametrize_backends(metafunc)


def suite_path() -> Path:
    """The pytest module of the suite, inside the installed package."""
    return Path(__file__).with_name("conformance_suite.py")


def run_pytest(backends: list[str], extra: list[str] | None = None) -> int:
    """Run the suite with pytest on ``backends``; returns pytest's exit code."""
    import pytest

    args = [str(suite_path()), "-p", "no:cacheprovider", "-q", "-ra"]
    for name in backends:
        args += ["--backend", name]
    return int(pytest.main(args + list(extra or []), plugins=[PytestPlugin()]))


def measure(backend: Backend, out=sys.stdout) -> dict:
    """Run every check and print the largest deviation per check and dtype against its
    tolerance (what ``hrta conformance --measure`` shows); raises on the first failure."""
    worst: dict[tuple[str, str], float] = {}

    def note(kind: str, dtype: str, value: float) -> None:
        worst[kind, dtype] = max(worst.get((kind, dtype), 0.0), value)

    for pc in point_cases():
        note("forward", pc.dtype, check_forward(backend, pc))
        note("gradient", pc.dtype, check_gradient(backend, pc))
    for case in one_step_cases():
        note("one_step", case.spec["dtype"], check_one_step(backend, case))
    for case in trajectory_cases() + divergence_cases():
        result = (check_divergence if case.id.startswith("diverge") else check_trajectory)(
            backend, case)
        dtype = case.spec["dtype"]
        group = case.id.split("-")[0]
        suffix = {"long": f" ({LONG_STEPS} steps)", "diverge": " (diverging)"}.get(group, "")
        note("train_loss" + suffix, dtype, result.worst[1])
        if result.params is not None:
            note("params" + suffix, dtype, max(p.rel for p in result.params.values()))
    print(f"backend {backend.name}: largest relative deviation from the reference", file=out)
    for (kind, dtype), value in sorted(worst.items()):
        eps = tolerances.eps(dtype)
        print(f"  {kind:<24} {dtype:<8} {value:9.2e}  ({value / eps:7.1f} eps)", file=out)
    return {f"{kind} {dtype}": value for (kind, dtype), value in worst.items()}
