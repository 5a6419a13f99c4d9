"""Bad input beyond tests/test_cli.py's hand-written run specs (issue 7, item 1).

* Run specs: hypothesis mutates random *valid* specs (wrong types, missing and unknown keys,
  out-of-range values, empty lists, unknown tasks, optimizers and schedules). Each mutant, given
  to ``hrta validate`` and ``hrta train`` (new folder, and an existing run with --force), gets
  exit status 2, one line ``hrta: error: <field>: expected ...`` naming the mutated field, no
  traceback, and nothing written or overwritten.
* Pipeline configs (``--config``, checked by hrta.pipeline_config as the Snakefile does) and
  experiment grids (hrta.grid.load_grid, as the Snakefile loads them): a hand-written list plus
  hypothesis mutations of valid ones, including empty grids, unknown backends, tasks, optimizers
  and schedules, non-UTF-8 and truncated files. Each: one SpecError line naming the field.
* Through Snakemake itself (slow): a bad config or grid stops ``snakemake`` at parse time with
  exit status 2, the field named on the last line of its output, no traceback, nothing run.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import string
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import REPO, SNAKEMAKE, snapshot

from hrta.cli import main
from hrta.grid import load_grid, parse_grid
from hrta.pipeline_config import exit_on_bad_input, validate_config
from hrta.spec import SpecError, parse_spec
from hrta.tasks import TASKS

CONFIG_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SMOKE = REPO / "benchmarks" / "smoke.yaml"
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# ---------------------------------------------------------------------------- valid run specs

ALL_KEYS = {"spec_version", "task", "model", "homotopy", "optimizer", "lr_schedule",
            "batch_size", "reset_optimizer_each_stage", "seed", "dtype", "log_every", "name",
            "n_train", "n_test", "noise", "width", "train", "init_a", "s", "s_from", "s_to",
            "steps", "lr", "momentum", "nesterov", "betas", "eps", "step_size", "gamma",
            "milestones", "eta_min"}


@st.composite
def valid_specs(draw) -> dict:
    """A random valid run spec, every optional field present (so that each can be mutated)."""
    n_train = draw(st.integers(4, 30))
    stages = []
    for _ in range(draw(st.integers(1, 3))):
        steps = draw(st.integers(1, 20))
        if draw(st.booleans()):
            stages.append({"s": draw(st.floats(0, 2)), "steps": steps})
        else:
            stages.append({"s_from": draw(st.floats(0, 2)), "s_to": draw(st.floats(0, 2)),
                           "steps": steps})
    if draw(st.booleans()):
        momentum = draw(st.floats(0.1, 0.9))
        optimizer = {"name": "sgd", "lr": draw(st.floats(1e-4, 1.0)), "momentum": momentum,
                     "nesterov": draw(st.booleans())}
    else:
        optimizer = {"name": "adam", "lr": draw(st.floats(1e-4, 1.0)),
                     "betas": [draw(st.floats(0, 0.99)), draw(st.floats(0, 0.999))],
                     "eps": draw(st.floats(1e-10, 1e-3))}
    schedule = draw(st.sampled_from([
        {"name": "constant"}, {"name": "step", "step_size": 3, "gamma": 0.5},
        {"name": "multistep", "milestones": [2, 5], "gamma": 0.3},
        {"name": "exponential", "gamma": 0.9}, {"name": "cosine", "eta_min": 0.0}]))
    return {
        "spec_version": 1,
        "task": {"name": draw(st.sampled_from(sorted(TASKS))), "n_train": n_train,
                 "n_test": draw(st.integers(1, 20)), "noise": draw(st.floats(0, 0.5))},
        "model": {"width": draw(st.integers(1, 8)), "train": ["W", "b", "a"],
                  "init_a": draw(st.sampled_from(["normal", "rademacher"]))},
        "homotopy": stages,
        "optimizer": optimizer,
        "lr_schedule": schedule,
        "batch_size": draw(st.one_of(st.none(), st.integers(1, n_train))),
        "reset_optimizer_each_stage": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31)),
        "dtype": draw(st.sampled_from(["float64", "float32"])),
        "log_every": draw(st.integers(1, 10)),
    }


# ---------------------------------------------------------------------------- mutations

NOT_A_NUMBER = st.one_of(st.text(string.ascii_letters, max_size=5), st.booleans(), st.none(),
                         st.lists(st.integers(), max_size=2), st.just({"x": 1}))
NOT_AN_INTEGER = st.one_of(NOT_A_NUMBER.filter(lambda v: v is not None),
                           st.floats(-1e6, 1e6, allow_nan=False))
NOT_A_BOOL = st.one_of(st.integers(), st.text(string.ascii_letters, max_size=5), st.none(),
                       st.floats(-5, 5))
BELOW = {  # integer fields -> (their minimum, what the message says)
    "task.n_train": (1, "an integer >= "), "task.n_test": (1, "an integer >= 1"),
    "model.width": (1, "an integer >= 1"), "homotopy[].steps": (1, "an integer >= 1"),
    "seed": (0, "an integer >= 0"), "log_every": (1, "an integer >= 1"),
    "lr_schedule.step_size": (1, "an integer >= 1"),
    "lr_schedule.milestones[]": (1, "an integer >= 1"), "batch_size": (1, "an integer >= 1"),
}
RANGES = {  # number fields -> (values outside the range, what the message says)
    "task.noise": (st.floats(-1e9, -1e-9), ">= 0"),
    "homotopy[].s": (st.one_of(st.floats(-1e9, -1e-9), st.floats(2.0001, 1e9)), "in [0, 2]"),
    "homotopy[].s_from": (st.one_of(st.floats(-1e9, -1e-9), st.floats(2.0001, 1e9)),
                          "in [0, 2]"),
    "homotopy[].s_to": (st.one_of(st.floats(-1e9, -1e-9), st.floats(2.0001, 1e9)), "in [0, 2]"),
    "optimizer.lr": (st.floats(-1e9, 0.0), "> 0"),
    "optimizer.momentum": (st.one_of(st.floats(-1e9, -1e-9), st.floats(1.0, 1e9)), "[0, 1)"),
    "optimizer.betas[]": (st.one_of(st.floats(-1e9, -1e-9), st.floats(1.0, 1e9)), "[0, 1)"),
    "optimizer.eps": (st.floats(-1e9, 0.0), "> 0"),
    "lr_schedule.gamma": (st.floats(-1e9, 0.0), "> 0"),
    "lr_schedule.eta_min": (st.floats(-1e9, -1e-9), ">= 0"),
}
BOOLS = ("optimizer.nesterov", "reset_optimizer_each_stage")
CHOICES = {"task.name": sorted(TASKS), "model.init_a": ["normal", "rademacher"],
           "optimizer.name": ["sgd", "adam"], "model.train[]": ["W", "b", "a"],
           "lr_schedule.name": ["constant", "step", "multistep", "exponential", "cosine"],
           "dtype": ["float64", "float32"]}
REQUIRED = ("task", "homotopy", "optimizer", "task.name", "optimizer.name", "optimizer.lr",
            "homotopy[].steps", "lr_schedule.step_size", "lr_schedule.milestones")
MAPPINGS = ("", "task", "model", "homotopy[]", "optimizer", "lr_schedule")
NON_EMPTY = {"homotopy": "non-empty list", "model.train": "non-empty list",
             "lr_schedule.milestones": "non-empty"}
NOT_MAPPING = {"task": (st.one_of(st.integers(), st.lists(st.integers())), "a mapping"),
               "model": (st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers())),
                         "a mapping"),
               "optimizer": (st.one_of(st.integers(), st.text(max_size=3)), "a mapping"),
               "lr_schedule": (st.one_of(st.integers(), st.lists(st.integers())), "a mapping"),
               "homotopy": (st.one_of(st.integers(), st.just({"s": 1, "steps": 2})),
                            "non-empty list")}


def _paths(node, prefix: str = "") -> dict[str, str]:
    """{concrete path: pattern} of every key and list item, e.g. 'homotopy[1].s':
    'homotopy[].s'."""
    out = {}
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()
    for key, value in items:
        if isinstance(key, int):
            concrete = f"{prefix}[{key}]"
        else:
            concrete = f"{prefix}.{key}" if prefix else key
        pattern = concrete
        for i in range(10):
            pattern = pattern.replace(f"[{i}]", "[]")
        out[concrete] = pattern
        out.update(_paths(value, concrete))
    return out


def _parts(path: str) -> list:
    parts = []
    for piece in path.replace("]", "").replace("[", ".").split("."):
        if piece:
            parts.append(int(piece) if piece.isdigit() else piece)
    return parts


def _set(doc: dict, path: str, value) -> None:
    *parents, last = _parts(path)
    node = doc
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


def _get(doc: dict, path: str):
    node = doc
    for key in _parts(path):
        node = node[key]
    return node


DELETE = object()


@st.composite
def spec_mutants(draw) -> tuple[dict, str, str, str]:
    """(mutated document, field path the error must name, fragment of 'expected', kind)."""
    doc = draw(valid_specs())
    paths = _paths(doc)
    kinds = ["type", "range", "required", "unknown", "choice", "empty", "container", "bool"]
    kind = draw(st.sampled_from(kinds))
    by_pattern = {}
    for concrete, pattern in paths.items():
        by_pattern.setdefault(pattern, []).append(concrete)

    def pick(patterns) -> tuple[str, str] | None:
        present = sorted(p for p in patterns if p in by_pattern)
        if not present:
            return None
        pattern = draw(st.sampled_from(present))
        return draw(st.sampled_from(sorted(by_pattern[pattern]))), pattern

    chosen = None
    if kind == "type":
        chosen = pick(list(BELOW) + list(RANGES))
        if chosen:
            path, pattern = chosen
            value = draw(NOT_AN_INTEGER if pattern in BELOW else NOT_A_NUMBER)
            if pattern == "batch_size" and value is None:
                value = "all"
            _set(doc, path, value)
            return doc, path, "an integer" if pattern in BELOW else "a number", kind
    if kind == "range":
        chosen = pick(list(BELOW) + list(RANGES))
        if chosen:
            path, pattern = chosen
            if pattern in BELOW:
                minimum, fragment = BELOW[pattern]
                value = draw(st.integers(-10**9, minimum - 1 if pattern != "task.n_train" else 0))
            else:
                values, fragment = RANGES[pattern]
                value = draw(values)
            _set(doc, path, value)
            return doc, path, fragment, kind
    if kind == "bool":
        chosen = pick(BOOLS)
        if chosen:
            _set(doc, chosen[0], draw(NOT_A_BOOL))
            return doc, chosen[0], "true or false", kind
    if kind == "choice":
        chosen = pick(list(CHOICES))
        if chosen:
            path, pattern = chosen
            value = draw(st.one_of(
                st.text(string.ascii_letters + string.digits + "_-", max_size=12).filter(
                    lambda v: v not in CHOICES[pattern]), st.integers(), st.none()))
            _set(doc, path, value)
            return doc, path, "one of", kind
    if kind == "required":
        chosen = pick(REQUIRED)
        if chosen:
            _set(doc, chosen[0], DELETE)
            return doc, chosen[0], "required", kind
    if kind == "unknown":
        pattern = draw(st.sampled_from(MAPPINGS))
        where = "" if pattern == "" else draw(st.sampled_from(sorted(by_pattern[pattern])))
        key = draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=10).filter(
            lambda k: k not in ALL_KEYS))
        node = doc if where == "" else _get(doc, where)
        node[key] = draw(st.one_of(st.integers(), st.text(max_size=4), st.none()))
        return doc, f"{where}.{key}" if where else key, "no such key", kind
    if kind == "empty":
        chosen = pick(list(NON_EMPTY))
        if chosen:
            _set(doc, chosen[0], [])
            return doc, chosen[0], NON_EMPTY[chosen[1]], kind
    if kind == "container":
        path = draw(st.sampled_from(sorted(NOT_MAPPING)))
        values, fragment = NOT_MAPPING[path]
        _set(doc, path, draw(values))
        return doc, path, fragment, kind
    # the chosen kind had no field in this spec: fall back to an unknown top-level key
    doc["x_unknown"] = 1
    return doc, "x_unknown", "no such key", "unknown"


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("existing")
    spec = root / "good.json"
    spec.write_text(json.dumps({"task": "sin1d", "homotopy": [{"s": 1, "steps": 4}],
                                "optimizer": {"name": "sgd", "lr": 0.1}, "model": {"width": 3}}))
    assert main(["train", str(spec), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run", snapshot(root)


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("hrta: error: "), err
    return lines[0][len("hrta: error: "):]


@SETTINGS
@given(mutant=spec_mutants())
def test_mutated_run_specs_are_rejected_by_the_cli(tmp_path, capsys, existing_run, reliability,
                                                   mutant):
    doc, path, fragment, _kind = mutant
    reliability["inputs tried"] += 1
    with pytest.raises(SpecError) as err:
        parse_spec(doc)
    assert err.value.path == path, (str(err.value), path)
    assert fragment in err.value.expected, (str(err.value), fragment)
    run_dir, before = existing_run
    work = tmp_path / f"case{reliability['inputs tried']}"
    work.mkdir()
    spec_file = work / "spec.json"
    spec_file.write_text(json.dumps(doc))  # JSON keeps strings strings ("1e3" stays text)
    for argv in (["validate", str(spec_file)],
                 ["train", str(spec_file), "--out", str(work / "new")],
                 ["train", str(spec_file), "--out", str(run_dir), "--force"]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert _one_error_line(captured.err) == str(err.value)
    assert os.listdir(work) == ["spec.json"]
    assert snapshot(run_dir.parent) == before


# ---------------------------------------------------------------------------- pipeline config

VALID_CONFIG = {"grid": "smoke", "results": "results", "runs_per_job": None,
                "missing_backends": "fail"}

CONFIG_CASES = [
    ("unknown-key", {"colour": "red"}, "config.colour", "no such key"),
    ("typo-key", {"missing_backend": "skip"}, "config.missing_backend", "no such key"),
    ("missing-backends-enum", {"missing_backends": "maybe"}, "config.missing_backends",
     "one of fail, skip"),
    ("missing-backends-bool", {"missing_backends": True}, "config.missing_backends", "one of"),
    ("runs-per-job-zero", {"runs_per_job": 0}, "config.runs_per_job", ">= 1"),
    ("runs-per-job-negative", {"runs_per_job": -3}, "config.runs_per_job", ">= 1"),
    ("runs-per-job-float", {"runs_per_job": 2.0}, "config.runs_per_job", "an integer or null"),
    ("runs-per-job-text", {"runs_per_job": "all"}, "config.runs_per_job", "an integer or null"),
    ("runs-per-job-bool", {"runs_per_job": True}, "config.runs_per_job", "an integer or null"),
    ("grid-empty", {"grid": ""}, "config.grid", "a non-empty string"),
    ("grid-number", {"grid": 3}, "config.grid", "a string"),
    ("grid-list", {"grid": ["smoke"]}, "config.grid", "a string"),
    ("results-empty", {"results": ""}, "config.results", "a non-empty string"),
    ("results-null", {"results": None}, "config.results", "a string"),
]


@pytest.mark.parametrize(("change", "path", "fragment"), [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])
def test_bad_pipeline_config_is_one_line(capsys, reliability, change, path, fragment):
    reliability["inputs tried"] += 1
    config = {**VALID_CONFIG, **change}
    with pytest.raises(SpecError) as err:
        validate_config(config, CONFIG_SCHEMA)
    assert err.value.path == path and fragment in err.value.expected, str(err.value)
    with pytest.raises(SystemExit) as stop, exit_on_bad_input():
        validate_config({**VALID_CONFIG, **change}, CONFIG_SCHEMA)
    assert stop.value.code == 2
    assert _one_error_line(capsys.readouterr().err) == str(err.value)


def test_valid_config_gets_its_defaults():
    assert validate_config({"grid": "smoke"}, CONFIG_SCHEMA) == {
        "grid": "smoke", "results": "results", "runs_per_job": None, "missing_backends": "fail"}


@SETTINGS
@given(key=st.sampled_from(sorted(VALID_CONFIG)),
       value=st.one_of(st.integers(-5, 0), st.floats(allow_nan=False), st.booleans(),
                       st.lists(st.integers(), max_size=2), st.just(""),
                       st.text(string.ascii_letters, min_size=1, max_size=6)))
def test_mutated_pipeline_configs(reliability, key, value):
    """Any value of the wrong type or out of range for any field: rejected, naming it; a value
    that happens to be valid (any non-empty string for grid/results, a known enum value) must
    be accepted unchanged."""
    config = {**VALID_CONFIG, key: value}
    valid = {"grid": isinstance(value, str) and value != "",
             "results": isinstance(value, str) and value != "",
             "runs_per_job": False,
             "missing_backends": value in ("fail", "skip")}[key]
    reliability["inputs tried"] += 0 if valid else 1
    if valid:
        assert validate_config(dict(config), CONFIG_SCHEMA)[key] == value
        return
    with pytest.raises(SpecError) as err:
        validate_config(config, CONFIG_SCHEMA)
    assert err.value.path == f"config.{key}" and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- experiment grids


@pytest.fixture(scope="module")
def smoke_doc() -> dict:
    doc = yaml.safe_load(SMOKE.read_text())
    parse_grid(copy.deepcopy(doc), "smoke")  # the base of every mutation is valid
    return doc


def _grid_with(doc: dict, path: str, value) -> dict:
    out = copy.deepcopy(doc)
    _set(out, path, value)
    return out


GRID_CASES = [  # (id, path set, value, field named, fragment)
    ("tasks-empty", "tasks", [], "g.tasks", "at least 1"),
    ("methods-empty", "methods", [], "g.methods", "at least 1"),
    ("optimizers-empty", "optimizers", {}, "g.optimizers", "at least 1"),
    ("eval-seeds-empty", "evaluation.seeds", [], "g.evaluation.seeds", "at least 1"),
    ("tune-seeds-empty", "tuning.seeds", [], "g.tuning.seeds", "at least 1"),
    ("agreement-backends-empty", "agreement.backends", [], "g.agreement.backends",
     "at least 1"),
    ("unknown-task", "tasks", ["sin1d", "mnist"], "g.tasks[1]", "one of"),
    ("unknown-method", "methods", ["relu", "annealing"], "g.methods[1]", "one of"),
    ("unknown-optimizer", "optimizers.gd.name", "rmsprop", "g.optimizers.gd.name",
     "one of sgd, adam"),
    ("unknown-schedule", "schedules.cosine.name", "linear", "g.schedules.cosine.name",
     "one of constant, step, exponential, cosine"),
    ("unknown-schedule-label", "hrta_schedules", ["warmup"], "g.hrta_schedules[0]",
     "one of the schedules"),
    ("unknown-tuning-backend", "tuning.backend", "cuda", "g.tuning.backend",
     "a registered backend"),
    ("unknown-eval-backend", "evaluation.backend", "mxnet", "g.evaluation.backend",
     "a registered backend"),
    ("unknown-agreement-backend", "agreement.backends", ["numpy", "theano"],
     "g.agreement.backends[1]", "a registered backend"),
    ("unknown-key", "colour", "red", "g.colour", "no such key"),
    ("unknown-nested-key", "tuning.budget", 3, "g.tuning.budget", "no such key"),
    ("missing-tasks", "tasks", DELETE, "g.tasks", "required"),
    ("missing-steps", "steps", DELETE, "g.steps", "required"),
    ("missing-tuning-backend", "tuning.backend", DELETE, "g.tuning.backend", "required"),
    ("steps-too-few", "steps", 2, "g.steps", ">= 4"),
    ("steps-float", "steps", 40.0, "g.steps", "an integer"),
    ("width-zero", "width", 0, "g.width", ">= 1"),
    ("width-text", "width", "wide", "g.width", "an integer"),
    ("n-train-one", "n_train", 1, "g.n_train", ">= 2"),
    ("lr-count-small", "tuning.lr_count", 3, "g.tuning.lr_count", ">= 5"),
    ("lr-range-reversed", "tuning.lr_range.gd", [1.0, 0.01], "g.tuning.lr_range.gd",
     "low < high"),
    ("lr-range-negative", "tuning.lr_range.gd", [-1.0, 0.01], "g.tuning.lr_range.gd[0]",
     "> 0"),
    ("seeds-overlap", "tuning.seeds", [0, 100], "g.tuning.seeds", "disjoint"),
    ("seed-negative", "evaluation.seeds", [-1], "g.evaluation.seeds[0]", ">= 0"),
    ("dtype-unknown", "agreement.dtypes", ["float16"], "g.agreement.dtypes[0]", "one of"),
    ("s-out-of-range", "theory.s_values", [0.5, 2.5], "g.theory.s_values[1]", "<= 2"),
    ("description-empty", "description", "", "g.description", "a non-empty string"),
    ("tasks-not-list", "tasks", "sin1d", "g.tasks", "a list"),
]


@pytest.mark.parametrize(("path", "value", "field", "fragment"), [c[1:] for c in GRID_CASES],
                         ids=[c[0] for c in GRID_CASES])
def test_bad_grid_is_one_line(tmp_path, smoke_doc, reliability, path, value, field, fragment):
    reliability["inputs tried"] += 1
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump(_grid_with(smoke_doc, path, value)))
    with pytest.raises(SpecError) as err:
        load_grid(grid_file)
    assert err.value.path == field and fragment in err.value.expected, str(err.value)
    assert "\n" not in str(err.value)


GRID_FILE_CASES = [
    ("non-utf8", lambda text: text.encode() + b"# \xff\xfe\n", "UTF-8"),
    ("latin1", lambda text: text.replace("Smoke", "Smök").encode("latin-1"), "UTF-8"),
    ("empty", lambda text: b"", "non-empty grid document"),
    ("not-a-mapping", lambda text: b"- sin1d\n- franke2d\n", "a mapping"),
    ("tab-indented", lambda text: text.replace("  seeds", "\tseeds", 1).encode(), "valid YAML"),
    ("duplicate-key", lambda text: (text + "steps: 50\n").encode(), "duplicate key"),
    ("truncated-flow", lambda text: text[: text.index("tasks:") + 14].encode(), "valid YAML"),
]


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in GRID_FILE_CASES],
                         ids=[c[0] for c in GRID_FILE_CASES])
def test_unreadable_grid_file_is_one_line(tmp_path, reliability, make, fragment):
    reliability["inputs tried"] += 1
    grid_file = tmp_path / "g.yaml"
    grid_file.write_bytes(make(SMOKE.read_text()))
    with pytest.raises(SpecError) as err:
        load_grid(grid_file)
    message = str(err.value)
    assert "\n" not in message and fragment in message, message
    assert message.startswith(f"{grid_file}: ") or message.startswith("g: "), message


@SETTINGS
@given(cut=st.floats(0.0, 1.0))
def test_truncated_grid_files(tmp_path, smoke_doc, reliability, cut):
    """A grid file cut anywhere before its tuning section: one line naming the file (broken
    YAML) or the first missing or broken field."""
    text = yaml.safe_dump(smoke_doc, sort_keys=False)
    end = text.index("\ntuning:")
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(text[: int(cut * end)])
    reliability["inputs tried"] += 1
    with pytest.raises(SpecError) as err:
        load_grid(grid_file)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.path.startswith(("g.", "g", str(grid_file))), message


GRID_MUTATIONS = {  # grid field -> (strategy of invalid values, fragment)
    "width": (NOT_AN_INTEGER, ""), "steps": (st.one_of(NOT_AN_INTEGER, st.integers(-9, 3)), ""),
    "n_train": (st.one_of(NOT_AN_INTEGER, st.integers(-9, 1)), ""),
    "log_every": (st.one_of(NOT_AN_INTEGER, st.integers(-9, 0)), ""),
    "tasks": (st.one_of(st.just([]), st.lists(st.text(string.ascii_lowercase, min_size=1,
                                                      max_size=6).filter(
        lambda t: t not in TASKS), min_size=1, max_size=2)), ""),
    "optimizers.gd.name": (st.text(string.ascii_lowercase, max_size=6).filter(
        lambda t: t not in ("sgd", "adam")), "one of"),
    "schedules.constant.name": (st.text(string.ascii_lowercase, max_size=6).filter(
        lambda t: t not in ("constant", "step", "exponential", "cosine")), "one of"),
    "tuning.backend": (st.text(string.ascii_lowercase, min_size=1, max_size=8).filter(
        lambda t: t not in ("numpy", "torch", "jax", "tensorflow")), "registered backend"),
    "agreement.backends": (st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=8)
                                    .filter(lambda t: t not in ("numpy", "torch", "jax",
                                                                "tensorflow")),
                                    min_size=1, max_size=2, unique=True), "registered backend"),
    "tuning.lr_count": (st.one_of(NOT_AN_INTEGER, st.integers(-9, 4)), ""),
    "thresholds": (st.lists(st.floats(-9, 0), min_size=1, max_size=2, unique=True), "> 0"),
}


@SETTINGS
@given(field=st.sampled_from(sorted(GRID_MUTATIONS)), data=st.data())
def test_mutated_grids(tmp_path, smoke_doc, reliability, field, data):
    values, fragment = GRID_MUTATIONS[field]
    value = data.draw(values)
    doc = _grid_with(smoke_doc, field, value)
    reliability["inputs tried"] += 1
    with pytest.raises(SpecError) as err:
        parse_grid(doc, "g")
    assert err.value.path.startswith(f"g.{field}"), (str(err.value), field)
    assert fragment in err.value.expected and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- through snakemake


def _snakemake(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile",
               env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SNAKEMAKE), "-s", str(snakefile), "-d", str(workdir), "-c1",
                           *args], capture_output=True, text=True, timeout=240, env=env)


@pytest.mark.slow
@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake is not installed")
def test_snakemake_stops_bad_input_at_parse_time(tmp_path, smoke_doc, reliability):
    """A bad --config value, an empty grid, a non-UTF-8 grid and a broken config/config.yaml:
    snakemake exits 2, its last line is the one-line error naming the field, no traceback, and
    nothing is written into the working directory's existing results."""
    workdir = tmp_path / "wd"
    (workdir / "results" / "g").mkdir(parents=True)
    (workdir / "results" / "g" / "results.parquet").write_bytes(b"finished earlier")
    before = snapshot(workdir / "results")
    empty_grid = tmp_path / "g.yaml"
    empty_grid.write_text(yaml.safe_dump(_grid_with(smoke_doc, "tasks", [])))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(SMOKE.read_text().replace("Smoke", "Smök").encode("latin-1"))
    # a copy of the workflow whose own config/config.yaml is broken
    copy_root = tmp_path / "repo"
    for part in ("workflow", "config", "benchmarks"):
        shutil.copytree(REPO / part, copy_root / part)
    shutil.copy(REPO / "Snakefile", copy_root / "Snakefile")
    (copy_root / "config" / "config.yaml").write_text("grid: smoke\nresults: [results\n")
    cases = [
        (("--config", "grid=smoke", "missing_backends=maybe"), REPO,
         "config.missing_backends: expected one of fail, skip"),
        (("--config", f"grid={empty_grid}"), REPO, "g.tasks: expected at least 1 item(s)"),
        (("--config", f"grid={latin}"), REPO, f"{latin}: expected a UTF-8 text file"),
        ((), copy_root, "config/config.yaml: expected valid YAML or JSON"),
    ]
    for args, root, expected in cases:
        reliability["inputs tried"] += 1
        proc = _snakemake(workdir, *args, snakefile=root / "Snakefile")
        output = (proc.stdout + proc.stderr).strip()
        assert proc.returncode == 2, output
        assert "Traceback" not in output, output
        last = output.splitlines()[-1]
        assert last.startswith("hrta: error: ") and expected in last, output
        assert sum(line.startswith("hrta: error") for line in output.splitlines()) == 1
    assert snapshot(workdir / "results") == before
    assert sorted(os.listdir(workdir)) in (["results"], [".snakemake", "results"])
