"""Experiment grids (``benchmarks/*.yaml``): load, validate, and expand into runs.

A grid is one study: tasks x methods x optimizers x learning-rate schedules, a fair tuning of
the learning rate, evaluation seeds, a width sweep, cross-backend agreement runs and theory
checks. :func:`load_grid` validates a grid file against ``schemas/grid.schema.yaml`` (filling
in its defaults) and then checks what a schema cannot; :func:`parse_grid` does the same for a
mapping. The expansion is pure and deterministic:

* :func:`tune_runs` lists the tuning runs: every (task, method, optimizer label, schedule) at
  each of ``lr_count`` log-spaced learning rates of its optimizer's range, on the tuning seeds;
* :func:`eval_runs` lists the evaluation runs (main study, width sweep, agreement and the NumPy
  reference runs they are held against), given the learning rate chosen for each
  (task, method, optimizer label, schedule); with no selection the learning rates are
  placeholders, which is enough to count runs and lay out batches before tuning has run.

Each run is a :class:`Run`: a validated :class:`~hrta.spec.RunSpec`, the backend that trains it,
its phase (``tune`` or ``eval``) and the labels the results table carries.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hrta.spec import RunSpec, SpecError, load_document, parse_spec

SCHEMA_PATH = Path(__file__).with_name("schemas") / "grid.schema.yaml"
PHASES = ("tune", "eval")
REFERENCE_BACKEND = "numpy"


# ---------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """A homotopy schedule shape: stages as (fraction of the step budget, s_from, s_to, ramp)."""

    name: str
    family: str  # "hrta" or "baseline"
    stages: tuple[tuple[float, float, float, bool], ...]
    description: str = ""

    def homotopy(self, steps: int) -> list[dict]:
        """The spec's ``homotopy`` list for a budget of ``steps``: stage i gets
        round(fraction_i * steps) steps (at least 1); the last stage takes the remainder."""
        out, used = [], 0
        for i, (fraction, s_from, s_to, ramp) in enumerate(self.stages):
            last = i == len(self.stages) - 1
            n = steps - used if last else max(1, round(fraction * steps))
            if n < 1:
                raise SpecError(f"methods.{self.name}", f"a step budget of at least "
                                f"{len(self.stages)} steps for its stages", steps)
            used += n
            out.append({"s_from": s_from, "s_to": s_to, "steps": n} if ramp
                       else {"s": s_from, "steps": n})
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "description": self.description,
                "stages": [{"fraction": f, "s_from": a, "s_to": b, "ramp": r}
                           for f, a, b, r in self.stages]}


def _const(fraction: float, s: float) -> tuple[float, float, float, bool]:
    return (fraction, s, s, False)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("relu", "baseline", (_const(1.0, 1.0),), "ReLU throughout (s = 1)"),
    Method("homotopy", "hrta", (_const(0.5, 0.5), _const(0.5, 1.0)),
           "homotopy: s = 0.5, then s = 1"),
    Method("relaxation", "hrta", (_const(0.5, 1.5), _const(0.5, 1.0)),
           "relaxation: s = 1.5, then s = 1"),
    Method("relaxation_past_relu", "hrta", (_const(0.5, 1.0), _const(0.5, 1.5)),
           "relaxation past ReLU: s = 1, then s = 1.5"),
    Method("linear_ramp", "hrta", ((0.5, 0.0, 1.0, True), _const(0.5, 1.0)),
           "linear ramp of s from 0 to 1 over the first half, then s = 1"),
    Method("four_stage", "hrta", tuple(_const(0.25, s) for s in (0.25, 0.5, 0.75, 1.0)),
           "four stages: s = 0.25, 0.5, 0.75, 1"),
)}


# ---------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Grid:
    """A validated grid: ``doc`` is the document with every default filled in."""

    name: str
    doc: dict
    methods: dict[str, Method]
    digest: str

    def __getitem__(self, key: str) -> Any:
        return self.doc[key]

    @property
    def thresholds(self) -> list[float]:
        return list(self.doc["thresholds"])

    def lr_grid(self, optimizer_label: str) -> list[float]:
        """The tuning learning rates of an optimizer label: ``lr_count`` log-spaced values from
        the low to the high end of its range, both included."""
        low, high = self.doc["tuning"]["lr_range"][optimizer_label]
        count = self.doc["tuning"]["lr_count"]
        return [float(v) for v in np.geomspace(low, high, count)]

    def resolved(self) -> dict:
        """The resolved grid as JSON-able data, with its methods and learning-rate grids."""
        return {"name": self.name, "digest": self.digest, "grid": self.doc,
                "methods": {k: m.to_dict() for k, m in self.methods.items()},
                "lr_grids": {label: self.lr_grid(label) for label in self.doc["optimizers"]}}


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string",
               "boolean": "true or false", "array": "a list", "object": "a mapping",
               "null": "null"}


def _type_names(types: str | list[str]) -> str:
    """JSON Schema type names in words: ["integer", "null"] -> 'an integer or null'."""
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_TYPE_NAMES.get(name, name) for name in names)


def _schema_error(err, prefix: str) -> SpecError:
    """A one-line SpecError from a jsonschema ValidationError (path, what was expected)."""
    path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                            for p in err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        where = f"{path}.{extra[0]}" if extra else path
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return SpecError(where, f"no such key{hint}", has_got=False)
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else "?"
        return SpecError(f"{path}.{missing}", "a value (the key is required)", has_got=False)
    expected = {
        "type": lambda: _type_names(err.validator_value),
        "enum": lambda: f"one of {', '.join(map(str, err.validator_value))}",
        "minimum": lambda: f"a number >= {err.validator_value}",
        "maximum": lambda: f"a number <= {err.validator_value}",
        "exclusiveMinimum": lambda: f"a number > {err.validator_value}",
        "exclusiveMaximum": lambda: f"a number < {err.validator_value}",
        "minItems": lambda: f"at least {err.validator_value} item(s)",
        "maxItems": lambda: f"at most {err.validator_value} item(s)",
        "minProperties": lambda: f"at least {err.validator_value} entry(ies)",
        "uniqueItems": lambda: "items without repeats",
        "minLength": lambda: "a non-empty string",
    }.get(err.validator, lambda: err.message)()
    return SpecError(path, expected, err.instance)


@cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _validator(schema: dict | None = None):
    """A Draft 2020-12 validator of ``schema`` (default: the grid schema) that fills in every
    default and, unlike plain JSON Schema, does not take 16.0 for an integer (a run spec would
    reject it later, naming the spec's field instead of the grid's)."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator
    strict = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    validate_properties = base.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(base, {"properties": fill_defaults},
                             type_checker=strict)(_schema() if schema is None else schema)


def parse_grid(document: Any, name: str = "grid") -> Grid:
    """Validate a grid mapping, fill in its defaults and cross-check its sections; raise
    :class:`SpecError` (one line naming the field) on the first problem."""
    if not isinstance(document, Mapping):
        raise SpecError(name, "a mapping (an experiment grid)", document)
    doc = copy.deepcopy(dict(document))
    errors = sorted(_validator().iter_errors(doc), key=lambda e: (len(e.absolute_path),
                                                                  list(map(str, e.path))))
    if errors:
        raise _schema_error(errors[0], name)
    methods = _check_semantics(doc, name)
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return Grid(name, doc, methods, hashlib.sha256(canonical.encode()).hexdigest())


def load_grid(path: str | Path, name: str | None = None) -> Grid:
    """Load and validate a grid file; its name is the file's stem unless given."""
    path = Path(path)
    return parse_grid(load_document(path, what="grid"), name or path.stem)


def _check_semantics(doc: dict, name: str) -> dict[str, Method]:
    from hrta.backends import backend_names
    from hrta.tasks import TASKS

    def fail(path: str, expected: str, got: Any) -> None:
        raise SpecError(f"{name}.{path}", expected, got)

    for i, task in enumerate(doc["tasks"]):
        if task not in TASKS:
            fail(f"tasks[{i}]", f"one of {', '.join(sorted(TASKS))}", task)
    methods: dict[str, Method] = {}
    for key, custom in doc["custom_methods"].items():
        if key in METHODS:
            fail(f"custom_methods.{key}", "a name not already built in", key)
        stages = []
        for j, stage in enumerate(custom["stages"]):
            where = f"custom_methods.{key}.stages[{j}]"
            has_s, ramp = "s" in stage, "s_from" in stage or "s_to" in stage
            if has_s == ramp or (ramp and not ("s_from" in stage and "s_to" in stage)):
                fail(where, "either s, or both s_from and s_to", stage)
            stages.append((stage["fraction"], stage["s_from"], stage["s_to"], True) if ramp
                          else _const(stage["fraction"], stage["s"]))
        total = sum(s[0] for s in stages)
        if abs(total - 1.0) > 1e-9:
            fail(f"custom_methods.{key}.stages", "fractions that sum to 1", total)
        methods[key] = Method(key, custom["family"], tuple(stages), custom.get("description", ""))
    known = {**METHODS, **methods}
    chosen = {}
    for i, method in enumerate(doc["methods"]):
        if method not in known:
            fail(f"methods[{i}]", f"one of {', '.join(known)}", method)
        chosen[method] = known[method]
        if len(known[method].stages) > doc["steps"]:
            fail("steps", f"at least {len(known[method].stages)} (stages of {method})",
                 doc["steps"])
    for label, opt in doc["optimizers"].items():
        for key in ("momentum", "nesterov", "betas", "eps"):
            allowed = ("momentum", "nesterov") if opt["name"] == "sgd" else ("betas", "eps")
            if key in opt and key not in allowed:
                fail(f"optimizers.{label}.{key}", f"no such key for {opt['name']}", opt[key])
        if (opt.get("batch_size") or 0) > doc["n_train"]:
            fail(f"optimizers.{label}.batch_size", f"null or <= n_train ({doc['n_train']})",
                 opt["batch_size"])
    required = {"step": ("step_fraction",), "exponential": ("final_factor",)}
    allowed = {"constant": (), "step": ("step_fraction", "gamma"),
               "exponential": ("final_factor",), "cosine": ("eta_min",)}
    for label, sched in doc["schedules"].items():
        for key in sched:
            if key != "name" and key not in allowed[sched["name"]]:
                fail(f"schedules.{label}.{key}", f"no such key for {sched['name']}", sched[key])
        for key in required.get(sched["name"], ()):
            if key not in sched:
                fail(f"schedules.{label}.{key}", "a value (the key is required)", None)
    labels = list(doc["optimizers"])
    scheds = list(doc["schedules"])

    def check_refs(path: str, values: list, pool: list, what: str) -> None:
        for i, value in enumerate(values):
            if value not in pool:
                fail(f"{path}[{i}]", f"one of the {what} ({', '.join(map(str, pool))})", value)

    check_refs("baseline_schedules", doc["baseline_schedules"], scheds, "schedules")
    check_refs("hrta_schedules", doc["hrta_schedules"], scheds, "schedules")
    tuning = doc["tuning"]
    for label in labels:
        if label not in tuning["lr_range"]:
            fail(f"tuning.lr_range.{label}", "a [low, high] range for every optimizer label",
                 None)
    for label, (low, high) in tuning["lr_range"].items():
        if label not in labels:
            fail(f"tuning.lr_range.{label}", f"one of the optimizer labels ({', '.join(labels)})",
                 label)
        if not low < high:
            fail(f"tuning.lr_range.{label}", "[low, high] with low < high", [low, high])
    overlap = sorted(set(tuning["seeds"]) & set(doc["evaluation"]["seeds"]))
    if overlap:
        fail("tuning.seeds", "seeds disjoint from evaluation.seeds", overlap)
    registered = backend_names()
    backends = [("tuning.backend", tuning["backend"]),
                ("evaluation.backend", doc["evaluation"]["backend"])]
    sweep, agree, theory = doc["width_sweep"], doc["agreement"], doc["theory"]
    if sweep is not None:
        check_refs("width_sweep.tasks", sweep.get("tasks", []), doc["tasks"], "tasks")
        check_refs("width_sweep.methods", sweep.get("methods", []), list(chosen), "methods")
        check_refs("width_sweep.optimizers", sweep.get("optimizers", []), labels, "optimizers")
        check_refs("width_sweep.schedules", sweep.get("schedules", []), scheds, "schedules")
        if "schedules" not in sweep and "constant" not in scheds:
            fail("width_sweep.schedules", "a list (the default, constant, is not defined)", None)
    if agree is not None:
        check_refs("agreement.optimizers", agree.get("optimizers", []), labels, "optimizers")
        check_refs("agreement.schedules", agree.get("schedules", []), scheds, "schedules")
        if "schedules" not in agree and "constant" not in scheds:
            fail("agreement.schedules", "a list (the default, constant, is not defined)", None)
        backends += [(f"agreement.backends[{i}]", b) for i, b in enumerate(agree["backends"])]
    if theory is not None:
        check_refs("theory.tasks", theory.get("tasks", []), doc["tasks"], "tasks")
        for i, b in enumerate(theory.get("ntk_backends", [])):
            backends.append((f"theory.ntk_backends[{i}]", b))
    for path, backend in backends:
        if backend not in registered:
            fail(path, f"a registered backend ({', '.join(registered)})", backend)
    return chosen


# ---------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """One run of the plan. ``labels`` are the results table's descriptive columns."""

    run_id: str
    phase: str
    backend: str
    spec: RunSpec
    labels: dict
    studies: tuple[str, ...] = ()
    cost: float = field(default=1.0, compare=False)

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "phase": self.phase, "backend": self.backend,
                "studies": list(self.studies), "labels": self.labels, "cost": self.cost,
                "spec_digest": self.spec.digest(), "spec": self.spec.to_dict()}

    @staticmethod
    def from_dict(data: Mapping) -> Run:
        return Run(run_id=data["run_id"], phase=data["phase"], backend=data["backend"],
                   spec=parse_spec(data["spec"]), labels=dict(data["labels"]),
                   studies=tuple(data.get("studies", ())), cost=float(data.get("cost", 1.0)))


def _schedule_spec(sched: Mapping, steps: int) -> dict:
    """The spec's lr_schedule for a grid schedule defined relative to the budget K."""
    name = sched["name"]
    if name == "step":
        return {"name": "step", "step_size": max(1, round(sched["step_fraction"] * steps)),
                "gamma": sched.get("gamma", 0.1)}
    if name == "exponential":
        return {"name": "exponential", "gamma": sched["final_factor"] ** (1.0 / steps)}
    if name == "cosine":
        return {"name": "cosine", "eta_min": sched.get("eta_min", 0.0)}
    return {"name": "constant"}


def _optimizer_spec(opt: Mapping, lr: float) -> dict:
    out = {"name": opt["name"], "lr": lr}
    for key in ("momentum", "nesterov", "betas", "eps"):
        if key in opt:
            out[key] = opt[key]
    return out


@dataclass(frozen=True)
class Case:
    """A (task, method, optimizer label, schedule) cell: what tuning picks one lr for."""

    task: str
    method: str
    optimizer_label: str
    schedule: str


def cases(grid: Grid) -> list[Case]:
    """Every tuned cell, in a fixed order: tasks, then methods, optimizers, schedules."""
    out = []
    for task in grid["tasks"]:
        for method, m in grid.methods.items():
            schedules = grid["baseline_schedules"] if m.family == "baseline" else \
                grid["hrta_schedules"]
            for label in grid["optimizers"]:
                for sched in schedules:
                    out.append(Case(task, method, label, sched))
    return out


def _short_dtype(dtype: str) -> str:
    return {"float64": "f64", "float32": "f32"}[dtype]


@dataclass(frozen=True)
class Planned:
    """A run before its spec is built: enough to count, order and batch runs cheaply."""

    case: Case
    phase: str
    backend: str
    labels: dict = field(hash=False)
    studies: tuple[str, ...] = ()
    cost: float = field(default=1.0, compare=False)


def _planned(grid: Grid, case: Case, *, phase: str, backend: str, lr: float, seed: int,
             width: int, dtype: str, lr_index: int | None = None,
             studies: tuple[str, ...] = ()) -> Planned:
    opt = grid["optimizers"][case.optimizer_label]
    labels = {"task": case.task, "method": case.method,
              "family": grid.methods[case.method].family, "optimizer": opt["name"],
              "optimizer_label": case.optimizer_label, "schedule": case.schedule,
              "lr": float(lr), "lr_index": lr_index, "width": width, "n_train": grid["n_train"],
              "seed": seed, "dtype": dtype, "batch_size": opt.get("batch_size"),
              "steps": grid["steps"]}
    return Planned(case, phase, backend, labels, tuple(studies),
                   cost=float(grid["steps"] * width * (grid["n_train"] + 2)))


def realize(grid: Grid, planned: Planned) -> Run:
    """The run of a planned cell: its validated spec and its run id."""
    case, lab = planned.case, planned.labels
    opt = grid["optimizers"][case.optimizer_label]
    steps = grid["steps"]
    spec = parse_spec({
        "task": {"name": case.task, "n_train": grid["n_train"], "n_test": grid["n_test"],
                 "noise": grid["noise"]},
        "model": {"width": lab["width"], "train": list(grid["train"]),
                  "init_a": grid["init_a"]},
        "homotopy": grid.methods[case.method].homotopy(steps),
        "optimizer": _optimizer_spec(opt, lab["lr"]),
        "lr_schedule": _schedule_spec(grid["schedules"][case.schedule], steps),
        "batch_size": opt.get("batch_size"),
        "seed": lab["seed"], "dtype": lab["dtype"], "log_every": grid["log_every"],
    })
    tag = f"lr{lab['lr_index']}-" if lab["lr_index"] is not None else ""
    run_id = (f"{case.task}-{case.method}-{case.optimizer_label}-{case.schedule}-{tag}"
              f"w{lab['width']}-seed{lab['seed']}-{_short_dtype(lab['dtype'])}-"
              f"{planned.backend}-{spec.digest()[:10]}")
    return Run(run_id, planned.phase, planned.backend, spec, dict(lab), planned.studies,
               cost=planned.cost)


def planned_tune(grid: Grid) -> list[Planned]:
    """Every tuning run: each cell at each learning rate of its optimizer's grid, per seed."""
    tuning = grid["tuning"]
    dtype = tuning.get("dtype", grid["dtype"])
    out = []
    for case in cases(grid):
        for i, lr in enumerate(grid.lr_grid(case.optimizer_label)):
            for seed in tuning["seeds"]:
                out.append(_planned(grid, case, phase="tune", backend=tuning["backend"], lr=lr,
                                    seed=seed, width=grid["width"], dtype=dtype, lr_index=i,
                                    studies=("tune",)))
    return out


def tune_runs(grid: Grid) -> list[Run]:
    """:func:`planned_tune` with specs."""
    return [realize(grid, p) for p in planned_tune(grid)]


def eval_requests(grid: Grid) -> list[tuple[Case, str, int, int, str, str]]:
    """The evaluation runs as (case, backend, seed, width, dtype, study), before learning rates
    are known; duplicates (the same run asked for by two studies) are kept here."""
    ev = grid["evaluation"]
    out = []
    all_cases = cases(grid)
    for case in all_cases:
        for seed in ev["seeds"]:
            out.append((case, ev["backend"], seed, grid["width"], grid["dtype"], "main"))
    sweep = grid["width_sweep"]
    if sweep is not None:
        tasks = sweep.get("tasks", list(grid["tasks"]))
        methods = sweep.get("methods", list(grid.methods))
        labels = sweep.get("optimizers", list(grid["optimizers"]))
        scheds = sweep.get("schedules", ["constant"])
        for case in all_cases:
            if (case.task in tasks and case.method in methods
                    and case.optimizer_label in labels and case.schedule in scheds):
                for width in sweep["widths"]:
                    for seed in sweep.get("seeds", ev["seeds"]):
                        out.append((case, ev["backend"], seed, width, grid["dtype"], "width"))
    agree = grid["agreement"]
    if agree is not None:
        labels = agree.get("optimizers", list(grid["optimizers"]))
        scheds = agree.get("schedules", ["constant"])
        seeds = agree.get("seeds", ev["seeds"][:1])
        for case in all_cases:
            if case.optimizer_label not in labels or case.schedule not in scheds:
                continue
            for backend in agree["backends"]:
                for dtype in agree["dtypes"]:
                    for seed in seeds:
                        out.append((case, backend, seed, grid["width"], dtype, "agreement"))
        every = agree["reference_runs"] == "all"
        for case, backend, seed, width, dtype, study in list(out):
            if backend != REFERENCE_BACKEND and (every or study == "agreement"):
                out.append((case, REFERENCE_BACKEND, seed, width, dtype, "reference"))
    return out


def planned_eval(grid: Grid, selection: Mapping[Case, float] | None = None,
                 backends: set[str] | None = None) -> list[Planned]:
    """The evaluation runs, deduplicated (a run asked for by several studies lists them all),
    in a fixed order. ``selection`` maps each case to its chosen learning rate; None gives
    placeholders (1.0) for counting and batch layout. ``backends`` keeps only those."""
    merged: dict[tuple, list] = {}
    for case, backend, seed, width, dtype, study in eval_requests(grid):
        if backends is not None and backend not in backends:
            continue
        studies = merged.setdefault((case, backend, seed, width, dtype), [])
        if study not in studies:
            studies.append(study)
    out = []
    for (case, backend, seed, width, dtype), studies in merged.items():
        if selection is None:
            lr = 1.0
        elif case in selection:
            lr = selection[case]
        else:
            raise KeyError(f"no selected learning rate for {case}")
        out.append(_planned(grid, case, phase="eval", backend=backend, lr=lr, seed=seed,
                            width=width, dtype=dtype, studies=tuple(studies)))
    return out


def eval_runs(grid: Grid, selection: Mapping[Case, float] | None = None,
              backends: set[str] | None = None) -> list[Run]:
    """:func:`planned_eval` with specs."""
    return [realize(grid, p) for p in planned_eval(grid, selection, backends)]


def grid_backends(grid: Grid) -> list[str]:
    """Every backend the grid trains on (tuning, evaluation, agreement, references)."""
    names = {grid["tuning"]["backend"], grid["evaluation"]["backend"]}
    if grid["agreement"] is not None:
        names |= set(grid["agreement"]["backends"]) | {REFERENCE_BACKEND}
    return sorted(names)


def theory_backends(grid: Grid) -> list[str]:
    theory = grid["theory"]
    if theory is None:
        return []
    if "ntk_backends" in theory:
        return list(theory["ntk_backends"])
    agree = grid["agreement"]
    return list(agree["backends"]) if agree is not None else [REFERENCE_BACKEND]


# ---------------------------------------------------------------------------- batches


def _order_key(run: Run | Planned) -> tuple:
    """Runs that share shapes and optimizer sit next to each other (a compiled training step
    is reused within a batch)."""
    lab = run.labels
    return (lab["dtype"], lab["task"], lab["width"], lab["optimizer_label"], lab["schedule"],
            lab["method"], lab["seed"], lab["lr_index"] if lab["lr_index"] is not None else -1)


def batch_count(n_runs: int, runs_per_job: int) -> int:
    return max(1, math.ceil(n_runs / runs_per_job)) if n_runs else 0


def assign_batches(runs: list, runs_per_job: int) -> dict[tuple[str, str], list[list]]:
    """Group runs (:class:`Run` or :class:`Planned`) by (phase, backend), order them (see
    :func:`_order_key`) and cut each group into ceil(n / runs_per_job) contiguous batches of
    about equal cost. Deterministic, and independent of the learning rates, so the layout is
    known before tuning has run."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.phase, run.backend), []).append(run)
    out = {}
    for key in sorted(groups):
        ordered = sorted(groups[key], key=_order_key)
        n_batches = batch_count(len(ordered), runs_per_job)
        costs = np.cumsum([r.cost for r in ordered])
        total = costs[-1]
        bounds = [0]
        for b in range(1, n_batches):
            cut = int(np.searchsorted(costs, total * b / n_batches, side="left")) + 1
            cut = min(max(cut, bounds[-1] + 1), len(ordered) - (n_batches - b))
            bounds.append(cut)
        bounds.append(len(ordered))
        out[key] = [ordered[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return out


def layout(grid: Grid, runs_per_job: int, backends: set[str] | None = None,
           ) -> dict[tuple[str, str], int]:
    """Number of training jobs per (phase, backend): what the Snakefile needs to know at parse
    time (the learning rates of evaluation runs do not change it; no spec is built)."""
    runs = planned_tune(grid) + planned_eval(grid, None, backends)
    if backends is not None:
        runs = [r for r in runs if r.backend in backends]
    return {key: len(batches) for key, batches in assign_batches(runs, runs_per_job).items()}


def plan_document(grid: Grid, runs: list[Run], runs_per_job: int) -> dict:
    """The plan of one phase as JSON-able data: each run with its batch number."""
    entries = []
    for batches in assign_batches(runs, runs_per_job).values():
        for b, batch in enumerate(batches):
            for run in batch:
                entries.append({**run.to_dict(), "batch": b})
    return {"grid": grid.name, "grid_digest": grid.digest, "runs_per_job": runs_per_job,
            "runs": entries}


def batch_runs(plan: Mapping, phase: str, backend: str, batch: int) -> list[Run]:
    """The runs of one batch of a plan document."""
    return [Run.from_dict(e) for e in plan["runs"]
            if e["phase"] == phase and e["backend"] == backend and e["batch"] == batch]


def selection_mapping(rows: list[Mapping]) -> dict[Case, float]:
    """{case: chosen lr} from selection rows (dicts with task, method, optimizer_label,
    schedule, lr and chosen)."""
    out = {}
    for row in rows:
        if row["chosen"]:
            out[Case(row["task"], row["method"], row["optimizer_label"], row["schedule"])] = \
                float(row["lr"])
    return out
