"""Every validation error of the run spec, through the command line: exit status 2, exactly one
line on stderr that names the field path and says what was expected, no traceback, and nothing
written (a new --out folder is not created; an existing run folder stays byte for byte the
same, even with --force). Each case also checks the SpecError raised by parse_spec/load_spec.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hrta.cli import main
from hrta.spec import SpecError, load_spec

VENV_HRTA = Path(sys.executable).parent / "hrta"

BASE = {
    "task": {"name": "sin2d", "n_train": 10, "n_test": 8},
    "model": {"width": 4},
    "homotopy": [{"s": 0.5, "steps": 3}, {"s_from": 0.5, "s_to": 1.5, "steps": 3}],
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.5},
    "lr_schedule": {"name": "step", "step_size": 2, "gamma": 0.5},
    "batch_size": 5,
    "log_every": 2,
}


def _with(path: str, value, base=None):
    """A copy of BASE with the dotted/indexed ``path`` set to ``value`` (or deleted: DELETE)."""
    doc = copy.deepcopy(BASE if base is None else base)
    keys = path.replace("[", ".").replace("]", "").split(".")
    node = doc
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


DELETE = object()
ADAM = _with("optimizer", {"name": "adam", "lr": 0.01})

# (id, document, field path named in the message, a fragment of what was expected)
CASES = [
    # unknown keys, at every level
    ("unknown-top", _with("colour", "red"), "colour", "no such key"),
    ("unknown-task", _with("task.size", 3), "task.size", "no such key"),
    ("unknown-model", _with("model.depth", 2), "model.depth", "no such key"),
    ("unknown-stage", _with("homotopy[1].s_mid", 1.0), "homotopy[1].s_mid", "no such key"),
    ("unknown-sgd", _with("optimizer.betas", [0.9, 0.99]), "optimizer.betas", "no such key"),
    ("unknown-adam", _with("optimizer.momentum", 0.9, ADAM), "optimizer.momentum",
     "no such key"),
    ("unknown-schedule", _with("lr_schedule.warmup", 3), "lr_schedule.warmup", "no such key"),
    ("unknown-constant", _with("lr_schedule", {"name": "constant", "gamma": 0.5}),
     "lr_schedule.gamma", "no such key"),
    # the document and required keys
    ("not-a-mapping", [1, 2, 3], "<document>", "a mapping"),
    ("missing-task", _with("task", DELETE), "task", "required"),
    ("missing-homotopy", _with("homotopy", DELETE), "homotopy", "required"),
    ("missing-optimizer", _with("optimizer", DELETE), "optimizer", "required"),
    ("spec-version", _with("spec_version", 2), "spec_version", "1"),
    # task
    ("unknown-task-name", _with("task.name", "cifar10"), "task.name", "one of"),
    ("task-wrong-type", _with("task", 5), "task", "a mapping"),
    ("n-train-string", _with("task.n_train", "many"), "task.n_train", "an integer"),
    ("n-train-float", _with("task.n_train", 10.0), "task.n_train", "an integer"),
    ("n-train-bool", _with("task.n_train", True), "task.n_train", "an integer"),
    ("n-test-zero", _with("task.n_test", 0), "task.n_test", "an integer >= 1"),
    ("noise-negative", _with("task.noise", -0.1), "task.noise", ">= 0"),
    ("noise-string", _with("task.noise", "low"), "task.noise", "a number"),
    # model
    ("width-zero", _with("model.width", 0), "model.width", "an integer >= 1"),
    ("width-bool", _with("model.width", True), "model.width", "an integer"),
    ("train-empty", _with("model.train", []), "model.train", "non-empty list"),
    ("train-unknown", _with("model.train", ["W", "c"]), "model.train[1]", "one of"),
    ("train-twice", _with("model.train", ["W", "W"]), "model.train", "at most once"),
    ("init-a", _with("model.init_a", "uniform"), "model.init_a", "one of"),
    # homotopy
    ("homotopy-empty", _with("homotopy", []), "homotopy", "non-empty list"),
    ("homotopy-mapping", _with("homotopy", {"s": 1.0, "steps": 3}), "homotopy",
     "non-empty list"),
    ("stage-not-mapping", _with("homotopy[0]", [1, 2]), "homotopy[0]", "a mapping"),
    ("steps-zero", _with("homotopy[0].steps", 0), "homotopy[0].steps", "an integer >= 1"),
    ("steps-negative", _with("homotopy[1].steps", -5), "homotopy[1].steps", "an integer >= 1"),
    ("steps-float", _with("homotopy[0].steps", 2.5), "homotopy[0].steps", "an integer"),
    ("steps-missing", _with("homotopy[0].steps", DELETE), "homotopy[0].steps", "required"),
    ("s-above-2", _with("homotopy[0].s", 2.5), "homotopy[0].s", "in [0, 2]"),
    ("s-below-0", _with("homotopy[0].s", -0.1), "homotopy[0].s", "in [0, 2]"),
    ("s-string", _with("homotopy[0].s", "one"), "homotopy[0].s", "a number"),
    ("s-nan", _with("homotopy[0].s", float("nan")), "homotopy[0].s", "finite"),
    ("s-from-above-2", _with("homotopy[1].s_from", 3.0), "homotopy[1].s_from", "in [0, 2]"),
    ("s-to-below-0", _with("homotopy[1].s_to", -1.0), "homotopy[1].s_to", "in [0, 2]"),
    ("ramp-only-from", _with("homotopy[1].s_to", DELETE), "homotopy[1].s_to",
     "both s_from and s_to"),
    ("ramp-only-to", _with("homotopy[1].s_from", DELETE), "homotopy[1].s_from",
     "both s_from and s_to"),
    ("s-and-ramp", _with("homotopy[0].s_from", 0.2), "homotopy[0]", "not both"),
    ("stage-without-s", _with("homotopy[0].s", DELETE), "homotopy[0].s", "s (constant stage)"),
    # optimizer
    ("optimizer-unknown", _with("optimizer.name", "rmsprop"), "optimizer.name", "one of"),
    ("lr-zero", _with("optimizer.lr", 0), "optimizer.lr", "> 0"),
    ("lr-negative", _with("optimizer.lr", -0.1), "optimizer.lr", "> 0"),
    ("lr-string", _with("optimizer.lr", "fast"), "optimizer.lr", "a number"),
    ("lr-missing", _with("optimizer.lr", DELETE), "optimizer.lr", "required"),
    ("momentum-one", _with("optimizer.momentum", 1.0), "optimizer.momentum", "[0, 1)"),
    ("momentum-negative", _with("optimizer.momentum", -0.5), "optimizer.momentum", "[0, 1)"),
    ("nesterov-string", _with("optimizer.nesterov", "true"), "optimizer.nesterov",
     "true or false"),
    ("nesterov-no-momentum", _with("optimizer", {"name": "sgd", "lr": 0.1, "nesterov": True}),
     "optimizer.momentum", "momentum > 0 when nesterov"),
    ("betas-length", _with("optimizer.betas", [0.9], ADAM), "optimizer.betas",
     "two numbers"),
    ("beta2-one", _with("optimizer.betas", [0.9, 1.0], ADAM), "optimizer.betas[1]", "[0, 1)"),
    ("eps-zero", _with("optimizer.eps", 0.0, ADAM), "optimizer.eps", "> 0"),
    # LR schedule
    ("schedule-unknown", _with("lr_schedule.name", "linear"), "lr_schedule.name", "one of"),
    ("step-size-missing", _with("lr_schedule.step_size", DELETE), "lr_schedule.step_size",
     "required"),
    ("step-size-zero", _with("lr_schedule.step_size", 0), "lr_schedule.step_size",
     "an integer >= 1"),
    ("gamma-zero", _with("lr_schedule.gamma", 0), "lr_schedule.gamma", "> 0"),
    ("milestones-decreasing", _with("lr_schedule", {"name": "multistep", "milestones": [5, 3]}),
     "lr_schedule.milestones", "increasing"),
    ("milestones-empty", _with("lr_schedule", {"name": "multistep", "milestones": []}),
     "lr_schedule.milestones", "non-empty"),
    ("milestone-zero", _with("lr_schedule", {"name": "multistep", "milestones": [0, 2]}),
     "lr_schedule.milestones[0]", "an integer >= 1"),
    ("exponential-no-gamma", _with("lr_schedule", {"name": "exponential"}), "lr_schedule.gamma",
     "required"),
    ("eta-min-negative", _with("lr_schedule", {"name": "cosine", "eta_min": -1.0}),
     "lr_schedule.eta_min", ">= 0"),
    # top-level scalars
    ("batch-zero", _with("batch_size", 0), "batch_size", "an integer >= 1"),
    ("batch-too-big", _with("batch_size", 11), "batch_size", "<= task.n_train (10)"),
    ("batch-string", _with("batch_size", "all"), "batch_size", "an integer"),
    ("reset-int", _with("reset_optimizer_each_stage", 1), "reset_optimizer_each_stage",
     "true or false"),
    ("seed-negative", _with("seed", -1), "seed", "an integer >= 0"),
    ("seed-float", _with("seed", 1.5), "seed", "an integer"),
    ("dtype", _with("dtype", "float16"), "dtype", "one of float64, float32"),
    ("log-every-zero", _with("log_every", 0), "log_every", "an integer >= 1"),
]

# Files that are not a valid document at all: the path named is the file itself.
RAW_CASES = [
    ("non-utf8", b"task: sin2d\nhomotopy: [{s: 1, steps: 2}]\n# caf\xe9\xff\n", "UTF-8"),
    ("truncated-yaml", b"task: {name: sin2d\nhomotopy: [{s: 1, steps: 2}\n", "valid YAML"),
    ("truncated-json", b'{"task": "sin2d", "homotopy": [{"s": 1, "steps"', "valid YAML"),
    ("empty", b"", "non-empty spec document"),
    ("comments-only", b"# nothing here\n", "non-empty spec document"),
    ("tab-indent", b"task:\n\tname: sin2d\n", "valid YAML"),
]

# YAML text where the reading of scalars matters
YAML_CASES = [
    ("quoted-number", "optimizer: {name: sgd, lr: '1e-3'}\n", "optimizer.lr", "a number"),
    ("exp-float-steps", "homotopy: [{s: 1, steps: 1e3}]\n", "homotopy[0].steps", "an integer"),
    ("exp-float-negative-lr", "optimizer: {name: sgd, lr: -1e-3}\n", "optimizer.lr", "> 0"),
    ("exp-float-s", "homotopy: [{s: 3e0, steps: 2}]\n", "homotopy[0].s", "in [0, 2]"),
]


def _yaml_case_text(override: str) -> str:
    doc = {k: v for k, v in BASE.items()}
    key = override.split(":", 1)[0]
    doc.pop(key)
    return yaml.safe_dump(doc) + override


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A complete run folder written by a valid spec, with its bytes."""
    root = tmp_path_factory.mktemp("existing")
    spec = root / "good.yaml"
    spec.write_text(yaml.safe_dump(BASE))
    out = root / "run"
    assert main(["train", str(spec), "--out", str(out), "--quiet"]) == 0
    return out, _snapshot(out)


def _check_one_error_line(err: str, path: str, fragment: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("hrta: error: "), line
    assert f"{path}: expected" in line, line
    assert fragment in line, line
    assert "Traceback" not in err


def _assert_rejected(capsys, spec_file: Path, path: str, fragment: str, existing) -> None:
    run_dir, snapshot = existing
    parent = spec_file.parent
    before = sorted(os.listdir(parent))
    new_out = parent / "new_run"
    for argv in (["validate", str(spec_file)],
                 ["train", str(spec_file), "--out", str(new_out)],
                 ["train", str(spec_file), "--out", str(run_dir), "--force"]):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == ""
        _check_one_error_line(captured.err, path, fragment)
    assert not new_out.exists()
    assert sorted(os.listdir(parent)) == before  # no staging folder or partial file left
    assert _snapshot(run_dir) == snapshot
    assert sorted(os.listdir(run_dir.parent)) == ["good.yaml", "run"]


@pytest.mark.parametrize(("doc", "path", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_invalid_spec_is_rejected(tmp_path, capsys, existing_run, doc, path, fragment):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(SpecError) as err:
        load_spec(spec_file)
    assert err.value.path == (path if path != "<document>" else "")
    assert "\n" not in str(err.value)
    # the JSON form of the same document fails the same way
    if not any(isinstance(v, float) and v != v for v in _leaves(doc)):
        json_file = tmp_path / "spec.json"
        json_file.write_text(json.dumps(doc))
        with pytest.raises(SpecError) as json_err:
            load_spec(json_file)
        assert str(json_err.value) == str(err.value)
        json_file.unlink()
    _assert_rejected(capsys, spec_file, path, fragment, existing_run)


def _leaves(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value)
    else:
        yield node


@pytest.mark.parametrize(("raw", "fragment"), [c[1:] for c in RAW_CASES],
                         ids=[c[0] for c in RAW_CASES])
def test_unreadable_spec_file_is_rejected(tmp_path, capsys, existing_run, raw, fragment):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_bytes(raw)
    _assert_rejected(capsys, spec_file, str(spec_file), fragment, existing_run)


@pytest.mark.parametrize(("override", "path", "fragment"), [c[1:] for c in YAML_CASES],
                         ids=[c[0] for c in YAML_CASES])
def test_yaml_scalars_are_read_as_yaml_1_2(tmp_path, capsys, existing_run, override, path,
                                           fragment):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(_yaml_case_text(override))
    _assert_rejected(capsys, spec_file, path, fragment, existing_run)


def test_missing_spec_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(missing), "--out", str(tmp_path / "run")]) == 2
    _check_one_error_line(capsys.readouterr().err, str(missing), "existing spec file")
    assert os.listdir(tmp_path) == []


def test_exponent_floats_in_yaml_are_accepted(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(_yaml_case_text("optimizer: {name: adam, lr: 1e-3, eps: 1e-8}\n"))
    assert main(["validate", str(spec_file)]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["optimizer"] == {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999],
                                     "eps": 1e-8}


def test_validate_prints_the_resolved_spec(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(BASE))
    assert main(["validate", str(spec_file)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    printed = yaml.safe_load(captured.out)
    spec = load_spec(spec_file)
    assert printed == spec.to_dict()
    assert printed["dtype"] == "float64" and printed["seed"] == 0  # defaults filled in
    assert os.listdir(tmp_path) == ["spec.yaml"]


# ---------------------------------------------------------------------------- --out and --backend


def test_out_that_is_a_file_is_rejected(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(BASE))
    target = tmp_path / "out"
    target.write_text("keep me")
    assert main(["train", str(spec_file), "--out", str(target), "--force"]) == 2
    _check_one_error_line(capsys.readouterr().err, "--out", "a folder path")
    assert target.read_text() == "keep me"


def test_unknown_backend_is_rejected(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(BASE))
    assert main(["train", str(spec_file), "--backend", "nosuch", "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--backend" in err and "nosuch" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- the installed script


SUBPROCESS_CASES = [c for c in CASES if c[0] in ("unknown-task", "s-above-2")]


@pytest.mark.skipif(not VENV_HRTA.exists(), reason="the hrta console script is not installed")
def test_installed_script_reports_errors_in_one_line(tmp_path, existing_run):
    """A few cases through the real console script (each start costs about a second)."""
    run_dir, snapshot = existing_run
    files = []
    for name, doc, path, fragment in SUBPROCESS_CASES:
        spec_file = tmp_path / f"{name}.yaml"
        spec_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append((spec_file, path, fragment))
    raw = tmp_path / "raw.yaml"
    raw.write_bytes(b"task: sin2d\n\xff\xfe\n")
    files.append((raw, str(raw), "UTF-8"))
    truncated = tmp_path / "truncated.yaml"
    truncated.write_bytes(b"task: {name: sin2d\nhomotopy: [\n")
    files.append((truncated, str(truncated), "valid YAML"))
    for i, (spec_file, path, fragment) in enumerate(files):
        # alternately a new --out folder and an existing run folder with --force
        extra = ["--out", str(tmp_path / "new_run")] if i % 2 == 0 else [
            "--out", str(run_dir), "--force"]
        proc = subprocess.run([str(VENV_HRTA), "train", str(spec_file), *extra],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == ""
        _check_one_error_line(proc.stderr, path, fragment)
    assert not (tmp_path / "new_run").exists()
    assert _snapshot(run_dir) == snapshot


@pytest.mark.skipif(not VENV_HRTA.exists(), reason="the hrta console script is not installed")
def test_installed_script_trains_quietly_when_piped(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "run"
    proc = subprocess.run([str(VENV_HRTA), "train", str(spec_file), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
    assert len(proc.stdout.splitlines()) == 1 and "finished" in proc.stdout
    assert sorted(os.listdir(out)) == ["history.csv", "inputs.npz", "metrics.json",
                                       "params.npz"]


def test_exit_without_teardown_keeps_what_was_written_and_the_status(tmp_path):
    log = tmp_path / "job.log"
    code = ("import sys\n"
            "from hrta.cli import exit_without_teardown\n"
            f"sys.stdout = open({str(log)!r}, 'w')\n"  # buffered: only a flush writes it
            "print('outputs written')\n"
            "exit_without_teardown(3)\n"
            "print('never')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stderr
    assert log.read_text() == "outputs written\n"
