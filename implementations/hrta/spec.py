"""The run spec of HRTA-SPEC.md section 10 as one typed, immutable, validated object.

``parse_spec(mapping)`` and ``load_spec(path)`` turn a YAML or JSON document into a
:class:`RunSpec` with every default filled in, or raise :class:`SpecError`, whose one-line
message names the field path and what was expected. Nothing here draws random numbers or
touches the file system beyond reading the spec file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPEC_VERSION = 1

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "step", "multistep", "exponential", "cosine")
DTYPES = ("float64", "float32")
PARAMETERS = ("W", "b", "a")
INIT_A = ("normal", "rademacher")
S_MIN, S_MAX = 0.0, 2.0


class SpecError(ValueError):
    """An invalid run spec (or pipeline config): ``path`` names the field, ``expected`` says what
    was expected, ``got`` is what was found. ``str(err)`` is one line."""

    def __init__(self, path: str, expected: str, got: Any = None, *, has_got: bool = True):
        self.path, self.expected, self.got = path, expected, got
        message = f"{path or '<document>'}: expected {expected}"
        if has_got:
            message += f", got {_show(got)}"
        super().__init__(message)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------- typed pieces


@dataclass(frozen=True)
class TaskSpec:
    name: str
    n_train: int = 100
    n_test: int = 1000
    noise: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    width: int = 1000
    train: tuple[str, ...] = PARAMETERS
    init_a: str = "normal"


@dataclass(frozen=True)
class Stage:
    """One homotopy stage: ``steps`` steps, s ramping linearly from ``s_from`` to ``s_to``
    (equal for a constant stage, which ``ramp`` False marks)."""

    steps: int
    s_from: float
    s_to: float
    ramp: bool = False

    def s_values(self) -> list[float]:
        """s for local steps j = 0..steps-1 (spec section 4)."""
        if not self.ramp or self.steps == 1:
            return [self.s_from] * self.steps
        span = self.s_to - self.s_from
        return [self.s_from + span * j / (self.steps - 1) for j in range(self.steps)]

    def to_dict(self) -> dict:
        if self.ramp:
            return {"s_from": self.s_from, "s_to": self.s_to, "steps": self.steps}
        return {"s": self.s_from, "steps": self.steps}


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def to_dict(self) -> dict:
        if self.name == "sgd":
            return {"name": "sgd", "lr": self.lr, "momentum": self.momentum,
                    "nesterov": self.nesterov}
        return {"name": "adam", "lr": self.lr, "betas": list(self.betas), "eps": self.eps}


@dataclass(frozen=True)
class LRScheduleSpec:
    name: str = "constant"
    step_size: int | None = None
    gamma: float | None = None
    milestones: tuple[int, ...] = ()
    eta_min: float = 0.0

    def to_dict(self) -> dict:
        keys = {"constant": (), "step": ("step_size", "gamma"),
                "multistep": ("milestones", "gamma"), "exponential": ("gamma",),
                "cosine": ("eta_min",)}[self.name]
        out: dict[str, Any] = {"name": self.name}
        for key in keys:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class RunSpec:
    """A complete, validated run spec; every default is filled in."""

    task: TaskSpec
    model: ModelSpec
    homotopy: tuple[Stage, ...]
    optimizer: OptimizerSpec
    lr_schedule: LRScheduleSpec = field(default_factory=LRScheduleSpec)
    batch_size: int | None = None
    reset_optimizer_each_stage: bool = False
    seed: int = 0
    dtype: str = "float64"
    log_every: int = 10
    spec_version: int = SPEC_VERSION

    @property
    def total_steps(self) -> int:
        """K, the sum of the stages' steps."""
        return sum(stage.steps for stage in self.homotopy)

    def to_dict(self) -> dict:
        """The resolved spec as plain JSON-able data; ``parse_spec(spec.to_dict()) == spec``."""
        return {
            "spec_version": self.spec_version,
            "task": {"name": self.task.name, "n_train": self.task.n_train,
                     "n_test": self.task.n_test, "noise": self.task.noise},
            "model": {"width": self.model.width, "train": list(self.model.train),
                      "init_a": self.model.init_a},
            "homotopy": [stage.to_dict() for stage in self.homotopy],
            "optimizer": self.optimizer.to_dict(),
            "lr_schedule": self.lr_schedule.to_dict(),
            "batch_size": self.batch_size,
            "reset_optimizer_each_stage": self.reset_optimizer_each_stage,
            "seed": self.seed,
            "dtype": self.dtype,
            "log_every": self.log_every,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the resolved spec: equal specs, equal digests."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------- field checks


def _mapping(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise SpecError(path, "a mapping", value)
    for key in value:
        if not isinstance(key, str):
            raise SpecError(path, "string keys", key)
    return value


def _reject_unknown(value: Mapping, allowed: tuple[str, ...], path: str) -> None:
    for key in value:
        if key not in allowed:
            raise SpecError(_join(path, key), f"no such key (allowed: {', '.join(allowed)})",
                            has_got=False)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _require(value: Mapping, key: str, path: str) -> Any:
    if key not in value:
        raise SpecError(_join(path, key), "a value (the key is required)", has_got=False)
    return value[key]


def _int(value: Any, path: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, "an integer" + (f" >= {minimum}" if minimum is not None else ""),
                        value)
    if minimum is not None and value < minimum:
        raise SpecError(path, f"an integer >= {minimum}", value)
    return int(value)


def _float(value: Any, path: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    if low is not None and high is not None:
        expected = f"a number in {lo}{low:g}, {high:g}{hi}"
    elif low is not None:
        expected = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        expected = "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, expected, value)
    number = float(value)
    if not math.isfinite(number):
        raise SpecError(path, "a finite number", value)
    if low is not None and (number < low or (low_open and number == low)):
        raise SpecError(path, expected, value)
    if high is not None and (number > high or (high_open and number == high)):
        raise SpecError(path, expected, value)
    return number


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, "true or false", value)
    return value


def _choice(value: Any, choices: tuple[str, ...] | list[str], path: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SpecError(path, f"one of {', '.join(choices)}", value)
    return value


# ---------------------------------------------------------------------------- sections


def _parse_task(value: Any, path: str = "task") -> TaskSpec:
    from hrta.tasks import TASKS  # local import: tasks imports numpy-heavy code

    names = sorted(TASKS)
    if isinstance(value, str):
        value = {"name": value}
    value = _mapping(value, path)
    _reject_unknown(value, ("name", "n_train", "n_test", "noise"), path)
    name = _choice(_require(value, "name", path), names, _join(path, "name"))
    task = TASKS[name]
    n_train = _int(value.get("n_train", 100), _join(path, "n_train"),
                   minimum=2 if task.dim == 1 else 1)
    n_test = _int(value.get("n_test", 1000), _join(path, "n_test"), minimum=1)
    noise = _float(value.get("noise", 0.0), _join(path, "noise"), low=0.0)
    return TaskSpec(name, n_train, n_test, noise)


def _parse_model(value: Any, path: str = "model") -> ModelSpec:
    value = _mapping(value, path)
    _reject_unknown(value, ("width", "train", "init_a"), path)
    width = _int(value.get("width", 1000), _join(path, "width"), minimum=1)
    train = value.get("train", list(PARAMETERS))
    train_path = _join(path, "train")
    if not isinstance(train, (list, tuple)) or not train:
        raise SpecError(train_path, "a non-empty list drawn from W, b, a", train)
    for i, name in enumerate(train):
        _choice(name, PARAMETERS, _join(train_path, i))
    if len(set(train)) != len(train):
        raise SpecError(train_path, "each of W, b, a at most once", train)
    ordered = tuple(p for p in PARAMETERS if p in train)
    init_a = _choice(value.get("init_a", "normal"), INIT_A, _join(path, "init_a"))
    return ModelSpec(width, ordered, init_a)


def _parse_stage(value: Any, path: str) -> Stage:
    value = _mapping(value, path)
    _reject_unknown(value, ("s", "s_from", "s_to", "steps"), path)
    steps = _int(_require(value, "steps", path), _join(path, "steps"), minimum=1)
    has_s = "s" in value
    has_from, has_to = "s_from" in value, "s_to" in value
    if has_s and (has_from or has_to):
        raise SpecError(path, "either s (constant stage) or s_from and s_to (ramp), not both",
                        dict(value))
    if has_s:
        s = _float(value["s"], _join(path, "s"), low=S_MIN, high=S_MAX)
        return Stage(steps, s, s, ramp=False)
    if not (has_from and has_to):
        missing = "s_to" if has_from else "s_from" if has_to else "s"
        what = ("both s_from and s_to for a ramp" if has_from or has_to
                else "s (constant stage) or s_from and s_to (ramp)")
        raise SpecError(_join(path, missing), what, has_got=False)
    s_from = _float(value["s_from"], _join(path, "s_from"), low=S_MIN, high=S_MAX)
    s_to = _float(value["s_to"], _join(path, "s_to"), low=S_MIN, high=S_MAX)
    return Stage(steps, s_from, s_to, ramp=True)


def _parse_homotopy(value: Any, path: str = "homotopy") -> tuple[Stage, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError(path, "a non-empty list of stages", value)
    return tuple(_parse_stage(stage, _join(path, i)) for i, stage in enumerate(value))


def _parse_optimizer(value: Any, path: str = "optimizer") -> OptimizerSpec:
    value = _mapping(value, path)
    name = _choice(_require(value, "name", path), OPTIMIZERS, _join(path, "name"))
    lr = _float(_require(value, "lr", path), _join(path, "lr"), low=0.0, low_open=True)
    if name == "sgd":
        _reject_unknown(value, ("name", "lr", "momentum", "nesterov"), path)
        momentum = _float(value.get("momentum", 0.0), _join(path, "momentum"), low=0.0, high=1.0,
                          high_open=True)
        nesterov = _bool(value.get("nesterov", False), _join(path, "nesterov"))
        if nesterov and momentum == 0.0:
            raise SpecError(_join(path, "momentum"), "a momentum > 0 when nesterov is true",
                            momentum)
        return OptimizerSpec("sgd", lr, momentum=momentum, nesterov=nesterov)
    _reject_unknown(value, ("name", "lr", "betas", "eps"), path)
    betas = value.get("betas", [0.9, 0.999])
    betas_path = _join(path, "betas")
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise SpecError(betas_path, "a list of two numbers [beta1, beta2] in [0, 1)", betas)
    b1, b2 = (_float(b, _join(betas_path, i), low=0.0, high=1.0, high_open=True)
              for i, b in enumerate(betas))
    eps = _float(value.get("eps", 1e-8), _join(path, "eps"), low=0.0, low_open=True)
    return OptimizerSpec("adam", lr, betas=(b1, b2), eps=eps)


def _parse_lr_schedule(value: Any, path: str = "lr_schedule") -> LRScheduleSpec:
    if isinstance(value, str):
        value = {"name": value}
    value = _mapping(value, path)
    name = _choice(value.get("name", "constant"), LR_SCHEDULES, _join(path, "name"))
    if name == "constant":
        _reject_unknown(value, ("name",), path)
        return LRScheduleSpec("constant")
    if name == "step":
        _reject_unknown(value, ("name", "step_size", "gamma"), path)
        step_size = _int(_require(value, "step_size", path), _join(path, "step_size"), minimum=1)
        gamma = _float(value.get("gamma", 0.1), _join(path, "gamma"), low=0.0, low_open=True)
        return LRScheduleSpec("step", step_size=step_size, gamma=gamma)
    if name == "multistep":
        _reject_unknown(value, ("name", "milestones", "gamma"), path)
        milestones = _require(value, "milestones", path)
        m_path = _join(path, "milestones")
        if not isinstance(milestones, (list, tuple)) or not milestones:
            raise SpecError(m_path, "a non-empty list of increasing step numbers", milestones)
        parsed = tuple(_int(m, _join(m_path, i), minimum=1) for i, m in enumerate(milestones))
        if any(b <= a for a, b in zip(parsed, parsed[1:], strict=False)):
            raise SpecError(m_path, "strictly increasing step numbers", milestones)
        gamma = _float(value.get("gamma", 0.1), _join(path, "gamma"), low=0.0, low_open=True)
        return LRScheduleSpec("multistep", milestones=parsed, gamma=gamma)
    if name == "exponential":
        _reject_unknown(value, ("name", "gamma"), path)
        gamma = _float(_require(value, "gamma", path), _join(path, "gamma"), low=0.0,
                       low_open=True)
        return LRScheduleSpec("exponential", gamma=gamma)
    _reject_unknown(value, ("name", "eta_min"), path)
    eta_min = _float(value.get("eta_min", 0.0), _join(path, "eta_min"), low=0.0)
    return LRScheduleSpec("cosine", eta_min=eta_min)


TOP_LEVEL_KEYS = ("spec_version", "task", "model", "homotopy", "optimizer", "lr_schedule",
                  "batch_size", "reset_optimizer_each_stage", "seed", "dtype", "log_every")


def parse_spec(document: Any) -> RunSpec:
    """Validate a run-spec mapping and fill in every default; raise SpecError on the first
    problem found (fields are checked in the order of TOP_LEVEL_KEYS)."""
    doc = _mapping(document, "")
    _reject_unknown(doc, TOP_LEVEL_KEYS, "")
    version = doc.get("spec_version", SPEC_VERSION)
    if isinstance(version, bool) or version != SPEC_VERSION:
        raise SpecError("spec_version", f"{SPEC_VERSION} (this suite reads spec v{SPEC_VERSION})",
                        version)
    task = _parse_task(_require(doc, "task", ""))
    model = _parse_model(doc.get("model", {}))
    homotopy = _parse_homotopy(_require(doc, "homotopy", ""))
    optimizer = _parse_optimizer(_require(doc, "optimizer", ""))
    lr_schedule = _parse_lr_schedule(doc.get("lr_schedule", {"name": "constant"}))
    batch_size = doc.get("batch_size", None)
    if batch_size is not None:
        batch_size = _int(batch_size, "batch_size", minimum=1)
        if batch_size > task.n_train:
            raise SpecError("batch_size", f"null or an integer <= task.n_train ({task.n_train})",
                            batch_size)
    reset = _bool(doc.get("reset_optimizer_each_stage", False), "reset_optimizer_each_stage")
    seed = _int(doc.get("seed", 0), "seed", minimum=0)
    dtype = _choice(doc.get("dtype", "float64"), DTYPES, "dtype")
    log_every = _int(doc.get("log_every", 10), "log_every", minimum=1)
    return RunSpec(task=task, model=model, homotopy=homotopy, optimizer=optimizer,
                   lr_schedule=lr_schedule, batch_size=batch_size,
                   reset_optimizer_each_stage=reset, seed=seed, dtype=dtype, log_every=log_every)


# ---------------------------------------------------------------------------- files


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 / JSON scalars where YAML 1.1 surprises users: exponent floats
    without a dot (``1e-3``) are numbers, only ``true``/``false`` are booleans (``yes``, ``on``
    stay strings and are then rejected where a boolean is expected), and a key given twice in
    one mapping is an error instead of silently keeping the last value."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", mark)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_document(path: str | Path, *, what: str = "spec") -> Any:
    """Read a YAML or JSON file; a missing, non-UTF-8 or unparsable file raises SpecError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(str(path), f"an existing {what} file", has_got=False) from None
    except OSError as err:
        raise SpecError(str(path), f"a readable {what} file ({err.strerror})",
                        has_got=False) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(str(path), f"a UTF-8 text file (undecodable byte at offset {err.start})",
                        has_got=False) from None
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise SpecError(str(path), f"valid YAML or JSON{where}: {problem}",
                        has_got=False) from None
    if document is None:
        raise SpecError(str(path), f"a non-empty {what} document", has_got=False)
    return document


def load_spec(path: str | Path) -> RunSpec:
    """Load and validate a run-spec file (YAML or JSON)."""
    return parse_spec(load_document(path))
