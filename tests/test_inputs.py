"""A run's inputs (hrta.inputs): produced once from the seed, written to inputs.npz
byte-identically for the same seed, read back exactly, and rejected when truncated, incomplete
or made for another spec."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from hrta import schedules
from hrta.inputs import (
    ARRAY_KEYS,
    InputsError,
    build_inputs,
    inputs_arrays,
    load_inputs,
    save_inputs,
    write_npz,
)
from hrta.spec import parse_spec


def _doc(**over):
    doc = {"task": {"name": "friedman1", "n_train": 20, "n_test": 15, "noise": 0.1},
           "model": {"width": 6},
           "homotopy": [{"s": 0.5, "steps": 4}, {"s_from": 0.5, "s_to": 1.5, "steps": 5}],
           "optimizer": {"name": "adam", "lr": 0.01},
           "lr_schedule": {"name": "step", "step_size": 3, "gamma": 0.5},
           "batch_size": 6, "seed": 3}
    doc.update(over)
    return doc


def test_shapes_dtypes_and_contents():
    spec = parse_spec(_doc())
    inp = build_inputs(spec)
    K, m = spec.total_steps, 6
    shapes = {"X_train": (20, 5), "y_train": (20,), "X_test": (15, 5), "y_test": (15,),
              "W0": (m, 5), "b0": (m,), "a0": (m,), "s": (K,), "lr": (K,)}
    for key, shape in shapes.items():
        assert getattr(inp, key).shape == shape, key
        assert getattr(inp, key).dtype == np.float64, key
    assert inp.batches.shape == (K, 6) and inp.batches.dtype == np.int64
    np.testing.assert_array_equal(inp.s, schedules.homotopy_s(spec))
    np.testing.assert_array_equal(inp.lr, schedules.learning_rates(spec.lr_schedule, 0.01, K))
    full = build_inputs(parse_spec(_doc(batch_size=None)))
    assert full.batches is None and "batches" not in full.arrays()


def test_float32_run_gets_float32_arrays_with_the_same_draws():
    inp64 = build_inputs(parse_spec(_doc()))
    inp32 = build_inputs(parse_spec(_doc(dtype="float32")))
    for key in ARRAY_KEYS:
        assert getattr(inp32, key).dtype == np.float32, key
        np.testing.assert_array_equal(getattr(inp32, key), getattr(inp64, key).astype(np.float32))
    np.testing.assert_array_equal(inp32.batches, inp64.batches)


def test_rademacher_output_layer():
    inp = build_inputs(parse_spec(_doc(model={"width": 200, "init_a": "rademacher"})))
    assert set(np.unique(inp.a0)) == {-1.0, 1.0}
    normal = build_inputs(parse_spec(_doc(model={"width": 200})))
    assert len(np.unique(normal.a0)) == 200
    np.testing.assert_array_equal(inp.W0, normal.W0)  # W and b are drawn first, identically


def test_same_seed_gives_byte_identical_files(tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    save_inputs(build_inputs(parse_spec(_doc())), first)
    save_inputs(build_inputs(parse_spec(_doc())), second)
    assert first.read_bytes() == second.read_bytes()
    third = tmp_path / "c.npz"
    save_inputs(build_inputs(parse_spec(_doc(seed=4))), third)
    assert third.read_bytes() != first.read_bytes()


def test_different_seeds_draw_different_everything():
    a, b = build_inputs(parse_spec(_doc(seed=1))), build_inputs(parse_spec(_doc(seed=2)))
    for key in ("X_train", "y_train", "X_test", "W0", "b0", "a0", "batches"):
        assert not np.array_equal(getattr(a, key), getattr(b, key)), key


def test_round_trip(tmp_path):
    spec = parse_spec(_doc())
    inp = build_inputs(spec)
    path = tmp_path / "inputs.npz"
    save_inputs(inp, path)
    with np.load(path) as raw:  # a plain numpy reader sees the spec's arrays
        assert set(raw.files) == {*ARRAY_KEYS, "batches", "spec_json"}
    back = load_inputs(path, spec)
    assert back.spec == spec
    for key in (*ARRAY_KEYS, "batches"):
        got, want = getattr(back, key), getattr(inp, key)
        assert got.dtype == want.dtype, key
        np.testing.assert_array_equal(got, want, err_msg=key)
    assert load_inputs(path).spec == spec  # without an expected spec: the embedded one


def test_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "inputs.npz"
    save_inputs(build_inputs(parse_spec(_doc())), path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        path.write_bytes(data[:cut])
        with pytest.raises(InputsError, match="not a readable inputs.npz") as err:
            load_inputs(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_garbage_and_missing_files_are_rejected(tmp_path):
    path = tmp_path / "inputs.npz"
    path.write_text("not a zip file at all")
    with pytest.raises(InputsError, match="not a readable"):
        load_inputs(path)
    with pytest.raises(InputsError, match="no such inputs file"):
        load_inputs(tmp_path / "missing.npz")


def test_inputs_of_another_spec_are_rejected(tmp_path):
    path = tmp_path / "inputs.npz"
    save_inputs(build_inputs(parse_spec(_doc())), path)
    for other in (_doc(seed=4), _doc(optimizer={"name": "adam", "lr": 0.02}),
                  _doc(homotopy=[{"s": 0.5, "steps": 9}])):
        with pytest.raises(InputsError, match="made for another spec") as err:
            load_inputs(path, parse_spec(other))
        assert str(path) in str(err.value)


def test_incomplete_or_inconsistent_archives_are_rejected(tmp_path):
    arrays = inputs_arrays(build_inputs(parse_spec(_doc())))
    missing = {k: v for k, v in arrays.items() if k != "W0"}
    write_npz(tmp_path / "missing.npz", missing)
    with pytest.raises(InputsError, match="missing arrays W0"):
        load_inputs(tmp_path / "missing.npz")
    bad_shape = {**arrays, "s": arrays["s"][:-1]}
    write_npz(tmp_path / "shape.npz", bad_shape)
    with pytest.raises(InputsError, match="array s has shape"):
        load_inputs(tmp_path / "shape.npz")
    no_batches = {k: v for k, v in arrays.items() if k != "batches"}
    write_npz(tmp_path / "batches.npz", no_batches)
    with pytest.raises(InputsError, match="batches"):
        load_inputs(tmp_path / "batches.npz")


def test_written_archive_is_deterministic_zip(tmp_path):
    path = tmp_path / "x.npz"
    write_npz(path, {"b": np.arange(3), "a": np.ones(2)})
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == ["a.npy", "b.npy"]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
