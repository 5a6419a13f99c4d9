"""A learning rate that blows up (issue 7, item 2): every installed backend marks the run diverged
at the same step as the NumPy reference, writes a complete run folder that says so, and
``hrta compare`` holds it against the reference like any other run.

The spec trains stably at s = 1 and blows up during the ramp of s towards 1.5 (the curvature
grows with s), so the divergence step lies deep inside the run (about step 260 of 400), not at
the first step. The pipeline's side (it goes on, the tuning rule and the report's statistics
treat diverged runs by a stated rule) is in tests/test_reliability_pipeline.py.
"""

from __future__ import annotations

import json
import math

import pytest
from reliability_support import write_spec

from hrta.backends import available_backends
from hrta.cli import main
from hrta.run import read_run

DIVERGING = {
    "task": {"name": "sin1d", "n_train": 16, "n_test": 8},
    "model": {"width": 16},
    "homotopy": [{"s": 1.0, "steps": 200}, {"s_from": 1.0, "s_to": 1.5, "steps": 200}],
    "optimizer": {"name": "sgd", "lr": 8.0},
    "log_every": 25,
}
DTYPES = ("float64", "float32")


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict:
    """The NumPy reference run folder of the diverging spec, per dtype."""
    root = tmp_path_factory.mktemp("reference")
    out = {}
    for dtype in DTYPES:
        spec = write_spec(root, {**DIVERGING, "dtype": dtype}, f"{dtype}.yaml")
        assert main(["train", str(spec), "--out", str(root / dtype), "--quiet"]) == 0
        out[dtype] = (spec, root / dtype)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_marks_the_step_it_diverged(references, dtype):
    _, folder = references[dtype]
    run = read_run(folder)
    step = run.metrics["diverged_step"]
    assert run.metrics["diverged"] is True and 200 < step < 400  # during the ramp
    assert run.metrics["steps_run"] == step and run.metrics["train_loss"] is None
    losses = run.history["train_loss"]
    assert list(run.history["step"]) == [*range(0, step, 25), step]
    assert all(math.isfinite(v) for v in losses[:-1])
    params_finite = all(math.isfinite(float(x)) for v in run.params.values() for x in v.ravel())
    assert not math.isfinite(losses[-1]) or not params_finite


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_backend_diverges_at_the_reference_step(references, tmp_path, capsys, backend,
                                                      dtype):
    spec, reference = references[dtype]
    out = tmp_path / backend
    assert main(["train", str(spec), "--backend", backend, "--out", str(out)]) == 0
    assert "diverged at step" in capsys.readouterr().out
    expected = json.loads((reference / "metrics.json").read_text())["diverged_step"]
    run = read_run(out)
    assert run.metrics["diverged"] is True
    assert run.metrics["diverged_step"] == expected, (backend, dtype)
    assert list(run.history["step"]) == list(read_run(reference).history["step"])
    # the comparison with the reference passes: same divergence step, losses within tolerance
    assert main(["compare", str(reference), str(out)]) == 0, capsys.readouterr().out
