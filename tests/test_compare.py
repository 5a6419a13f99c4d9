"""``hrta compare`` and hrta.compare: identical runs pass, a perturbed history fails at the
perturbed step with exit 1, different specs and unusable folders are refused with exit 2, and
divergence is handled as documented."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hrta import cli, compare, run, tolerances
from hrta.backends import get_backend
from hrta.inputs import build_inputs, write_npz
from hrta.spec import parse_spec

STEPS, LOG_EVERY = 40, 5


def spec_doc(**overrides) -> dict:
    doc = {"task": {"name": "sin1d", "n_train": 32, "n_test": 8}, "model": {"width": 16},
           "homotopy": [{"s": 0.5, "steps": 20}, {"s_from": 0.5, "s_to": 1.5, "steps": 20}],
           "optimizer": {"name": "adam", "lr": 0.01}, "log_every": LOG_EVERY}
    doc.update(overrides)
    return doc


def make_run(folder: Path, backend: str = "numpy", **overrides) -> Path:
    outcome = run.execute(get_backend(backend), build_inputs(parse_spec(spec_doc(**overrides))))
    return run.write_run(outcome, folder)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "numpy")


def copy_of(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(folder, tmp_path / name))


def reseal(folder: Path) -> None:
    """Record the edited files' checksums in metrics.json, as a backend writing these values
    would have (read_run rejects a folder whose files do not match them)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["files"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                        for name in run.CHECKSUMMED}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def scale_loss(folder: Path, step: int, factor: float) -> None:
    """Multiply train_loss of one history row by ``factor``, in place."""
    path = folder / "history.csv"
    rows = list(csv.reader(path.open()))
    for row in rows[1:]:
        if int(row[0]) == step:
            row[3] = repr(float(row[3]) * factor)
    with path.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    reseal(folder)


def hrta(*argv: str) -> int:
    return cli.main(["compare", *map(str, argv)])


def test_identical_runs_agree(reference, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert hrta(reference, copy_of(reference, tmp_path), "--json", out) == 0
    report = json.loads(out.read_text())
    assert report["ok"] is True
    (entry,) = report["runs"]
    assert entry["first_exceeding_step"] is None
    assert entry["max_abs_diff"] == 0.0
    assert entry["steps"] == list(range(0, STEPS, LOG_EVERY)) + [STEPS]
    assert set(entry["params"]) == {"W", "b", "a"}
    assert entry["train_loss_tolerance"]["rtol"] == tolerances.FLOAT64_TARGET
    assert "verdict" in capsys.readouterr().out


def test_perturbed_history_fails_at_that_step(reference, tmp_path, capsys):
    bad = copy_of(reference, tmp_path)
    scale_loss(bad, 15, 1 + 1e-7)  # 100x the float64 tolerance, at one logged step
    out = tmp_path / "report.json"
    assert hrta(reference, bad, "--json", out) == 1
    entry = json.loads(out.read_text())["runs"][0]
    assert entry["first_exceeding_step"] == 15
    assert entry["ok"] is False
    assert entry["max_rel_diff_step"] == 15
    assert entry["max_rel_diff"] == pytest.approx(1e-7, rel=1e-3)
    printed = capsys.readouterr().out
    assert "EXCEEDED" in printed and "train_loss at step 15" in printed


def test_perturbation_below_the_tolerance_passes_and_rtol_overrides(reference, tmp_path):
    small = copy_of(reference, tmp_path)
    scale_loss(small, 15, 1 + 1e-11)
    assert hrta(reference, small) == 0
    assert hrta(reference, small, "--rtol", "1e-12") == 1


def test_perturbed_parameters_fail(reference, tmp_path):
    bad = copy_of(reference, tmp_path)
    with np.load(bad / "params.npz") as archive:
        params = {k: archive[k] for k in archive.files}
    params["b"] = params["b"] * (1 + 1e-6)
    write_npz(bad / "params.npz", params)
    reseal(bad)
    out = tmp_path / "report.json"
    assert hrta(reference, bad, "--json", out) == 1
    entry = json.loads(out.read_text())["runs"][0]
    assert entry["first_exceeding_step"] is None  # the history still agrees
    assert entry["params"]["b"]["ok"] is False and entry["params"]["W"]["ok"] is True
    assert entry["params"]["b"]["rel_diff"] == pytest.approx(1e-6, rel=1e-6)


def test_runs_of_different_specs_are_refused(reference, tmp_path, capsys):
    other = make_run(tmp_path / "seed1", seed=1)
    assert hrta(reference, other) == 2
    err = capsys.readouterr().err
    assert "another spec" in err and "seed" in err


def test_unusable_input_is_exit_2(reference, tmp_path, capsys):
    broken = copy_of(reference, tmp_path)
    (broken / "params.npz").unlink()
    assert hrta(reference, broken) == 2
    assert "missing params.npz" in capsys.readouterr().err
    assert hrta(reference) == 2
    edited = copy_of(reference, tmp_path, "edited")
    scale_loss(edited, 15, 2.0)
    (edited / "metrics.json").write_text((reference / "metrics.json").read_text())
    assert hrta(reference, edited) == 2  # checksums no longer match
    assert hrta(reference, tmp_path / "nowhere") == 2


def test_bad_tolerance_option_is_a_usage_error(reference):
    with pytest.raises(SystemExit) as exit_info:
        hrta(reference, reference, "--rtol", "-1")
    assert exit_info.value.code == 2


def test_another_backend_agrees_at_the_default_tolerance(reference, tmp_path):
    """The example plugin is an independent implementation: it must pass in float64."""
    einsum = make_run(tmp_path / "einsum", backend="numpy-einsum")
    out = tmp_path / "report.json"
    assert hrta(reference, einsum, "--json", out) == 0
    entry = json.loads(out.read_text())["runs"][0]
    assert 0 < entry["max_rel_diff"] < 1e-12  # really computed differently, and close


def test_float32_runs_get_the_float32_tolerance(tmp_path):
    base = make_run(tmp_path / "a", dtype="float32")
    other = make_run(tmp_path / "b", backend="numpy-einsum", dtype="float32")
    out = tmp_path / "report.json"
    assert hrta(base, other, "--json", out) == 0
    tol = json.loads(out.read_text())["runs"][0]["train_loss_tolerance"]
    spec = parse_spec(spec_doc(dtype="float32"))
    assert tol["rtol"] == tolerances.for_run(spec)[0].rtol
    assert tol["rtol"] == (32 + 16 + 1 + 2 + STEPS) * np.finfo(np.float32).eps


# ---------------------------------------------------------------------------- divergence


def view(folder: Path) -> compare.RunView:
    return compare.RunView.from_folder(run.read_run(folder))


def diverged_at(v: compare.RunView, step: int) -> compare.RunView:
    """The same run as if it had diverged at ``step`` (history cut there, loss inf)."""
    keep = v.steps < step
    losses = np.append(v.train_loss[keep], np.inf)
    return replace(v, steps=np.append(v.steps[keep], step), train_loss=losses,
                   diverged_step=step, label="diverged")


def test_a_run_that_diverges_where_the_baseline_did_not_fails_at_that_step(reference):
    base = view(reference)
    result = compare.compare_pair(base, diverged_at(base, 17))
    assert not result.ok
    assert result.first_bad_step == 17
    assert result.params is None
    assert list(result.steps) == [0, 5, 10, 15]  # compared up to the divergence
    assert "diverged at step 17" in result.failure_message()
    # and the other way round
    reverse = compare.compare_pair(diverged_at(base, 17), base)
    assert not reverse.ok and reverse.first_bad_step == 17


def test_runs_that_diverge_at_the_same_step_agree(reference):
    base = diverged_at(view(reference), 17)
    result = compare.compare_pair(base, replace(base, label="other"))
    assert result.ok and result.params is None and result.first_bad_step is None


def test_real_divergence_through_the_cli(tmp_path, capsys):
    huge = {"optimizer": {"name": "sgd", "lr": 50.0}}
    base = make_run(tmp_path / "numpy", **huge)
    other = make_run(tmp_path / "einsum", backend="numpy-einsum", **huge)
    assert json.loads((base / "metrics.json").read_text())["diverged"] is True
    out = tmp_path / "report.json"
    assert hrta(base, other, "--json", out) == 0
    entry = json.loads(out.read_text())["runs"][0]
    assert entry["diverged_step"] == entry["baseline_diverged_step"] is not None
    assert entry["params"] is None


def test_mismatched_parameter_shapes_are_refused(reference):
    base = view(reference)
    wrong = replace(base, params={**base.params, "W": base.params["W"][:-1]})
    with pytest.raises(compare.SpecMismatch, match="parameter W has shape"):
        compare.compare_pair(base, wrong)


def test_table_marks_the_failing_step_and_keeps_it_when_abbreviated(reference, tmp_path):
    bad = copy_of(reference, tmp_path)
    scale_loss(bad, 35, 1.5)
    base, other = view(reference), view(bad)
    results = compare.compare_runs(base, [other])
    table = compare.format_report(base, results, max_rows=3)
    step_rows = [line.split() for line in table.splitlines() if line[:8].strip().isdigit()]
    shown = [int(row[0]) for row in step_rows]
    assert 35 in shown and 0 in shown and STEPS in shown
    assert len(shown) <= 5
    assert [row for row in step_rows if int(row[0]) == 35][0][-1].endswith("!")
