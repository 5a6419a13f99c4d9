"""The agreement stage's verdicts (hrta.agreement): the arithmetic bound first, then, for
float32 runs, the rounding noise measured on the reference's own float32/float64 pair."""

from __future__ import annotations

import numpy as np
import pytest

from hrta.agreement import rounding_noise, verdict
from hrta.backends.registry import get_backend
from hrta.inputs import build_inputs
from hrta.run import execute, read_history, write_run
from hrta.spec import parse_spec
from hrta.tolerances import ROUNDING_NOISE_FACTOR

SPEC = {"task": {"name": "sin1d", "n_train": 16, "n_test": 16}, "model": {"width": 8},
        "homotopy": [{"s": 0.5, "steps": 20}, {"s_from": 0.5, "s_to": 1.5, "steps": 20}],
        "optimizer": {"name": "adam", "lr": 0.05}, "seed": 1, "log_every": 5}


def row(**changes) -> dict:
    """An agreement row that exceeded its bound, with a measured float32 rounding noise of
    1e-4 (train_loss) and 2e-4 (parameters)."""
    base = {"passed_bound": False, "divergence_differs": False, "max_rel_loss": 1.5e-4,
            "max_rel_params": 3e-4, "rounding_noise_loss": 1e-4, "rounding_noise_params": 2e-4}
    return {**base, **changes}


@pytest.mark.parametrize("changes, expected", [
    ({"passed_bound": True}, "within bound"),
    ({}, "within rounding noise"),
    ({"max_rel_loss": ROUNDING_NOISE_FACTOR * 1e-4}, "within rounding noise"),  # inclusive
    ({"max_rel_loss": 2.01e-4}, "disagrees"),
    ({"max_rel_params": 4.01e-4}, "disagrees"),
    ({"divergence_differs": True}, "disagrees"),
    # float64 rows and float32 rows without a float64 twin have no noise: the bound decides
    ({"rounding_noise_loss": None, "rounding_noise_params": None}, "disagrees"),
    # both the reference pair and the compared pair diverged (no final parameters)
    ({"max_rel_params": None, "rounding_noise_params": None}, "within rounding noise"),
    # the compared run has parameters but the reference pair had none: not comparable
    ({"rounding_noise_params": None}, "disagrees"),
])
def test_verdict(changes, expected):
    assert verdict(row(**changes)) == expected


def test_rounding_noise_is_the_float32_reference_against_the_float64_one(tmp_path):
    folders = {}
    for dtype in ("float32", "float64"):
        spec = parse_spec({**SPEC, "dtype": dtype})
        folders[dtype] = tmp_path / dtype
        write_run(execute(get_backend("numpy"), build_inputs(spec)), folders[dtype])
    loss_noise, params_noise = rounding_noise(str(folders["float32"]), str(folders["float64"]))

    h32 = read_history(folders["float32"] / "history.csv")["train_loss"]
    h64 = read_history(folders["float64"] / "history.csv")["train_loss"]
    expected = np.max(np.abs(h32 - h64) / np.abs(h64))
    assert loss_noise == pytest.approx(expected, rel=1e-12)
    # float32 rounding is visible, but far below the loss itself
    assert 1e-9 < loss_noise < 1e-3
    assert params_noise is not None and 1e-9 < params_noise < 1e-3
