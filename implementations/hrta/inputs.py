"""A run's inputs (HRTA-SPEC.md sections 6 and 7): data, initial parameters, batch indices, s_k
and lr_k, produced once from the seed with NumPy. Backends draw no random numbers: they all
consume an :class:`Inputs`.

Random streams are keyed by purpose (``SeedSequence(seed, spawn_key=(stream,))``), so that the
training points, test points, noise, initial parameters and batches are independent of one
another and adding a stream never changes the others.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrta import schedules
from hrta.spec import SPEC_VERSION, RunSpec, parse_spec
from hrta.tasks import TASKS, sample_task

STREAM_TRAIN_X, STREAM_TEST_X, STREAM_NOISE, STREAM_INIT, STREAM_BATCHES = range(5)

ARRAY_KEYS = ("X_train", "y_train", "X_test", "y_test", "W0", "b0", "a0", "s", "lr")


class InputsError(ValueError):
    """An inputs.npz that is unreadable, incomplete or made for another spec."""


def stream(seed: int, purpose: int) -> np.random.Generator:
    """The NumPy generator of one named random stream of a run."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose,)))


@dataclass(frozen=True)
class Inputs:
    """Everything a backend needs besides the spec. Float arrays are in the run's dtype.

    X_train (n, d), y_train (n,), X_test (n_test, d), y_test (n_test,), W0 (m, d), b0 (m,),
    a0 (m,), s (K,), lr (K,), batches (K, B) int64 or None for full batch.
    """

    spec: RunSpec
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    W0: np.ndarray
    b0: np.ndarray
    a0: np.ndarray
    s: np.ndarray
    lr: np.ndarray
    batches: np.ndarray | None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.spec.dtype)

    @property
    def reset(self) -> np.ndarray:
        """bool (K,): re-create the optimizer state before these steps."""
        return schedules.reset_mask(self.spec)

    def initial_params(self) -> dict[str, np.ndarray]:
        return {"W": self.W0.copy(), "b": self.b0.copy(), "a": self.a0.copy()}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {key: getattr(self, key) for key in ARRAY_KEYS}
        if self.batches is not None:
            out["batches"] = self.batches
        return out


def build_inputs(spec: RunSpec) -> Inputs:
    """Produce a run's inputs from its spec; the same spec gives identical arrays."""
    task = TASKS[spec.task.name]
    data = sample_task(task, spec.task.n_train, spec.task.n_test, spec.task.noise,
                       stream(spec.seed, STREAM_TRAIN_X), stream(spec.seed, STREAM_TEST_X),
                       stream(spec.seed, STREAM_NOISE))
    init = stream(spec.seed, STREAM_INIT)
    m, d = spec.model.width, task.dim
    w0 = init.standard_normal((m, d))
    b0 = init.standard_normal(m)
    if spec.model.init_a == "rademacher":
        a0 = init.choice(np.array([-1.0, 1.0]), size=m)
    else:
        a0 = init.standard_normal(m)
    steps = spec.total_steps
    batches = None
    if spec.batch_size is not None:
        batches = schedules.batch_indices(spec.task.n_train, spec.batch_size, steps,
                                          stream(spec.seed, STREAM_BATCHES))
    dtype = np.dtype(spec.dtype)
    lr = schedules.learning_rates(spec.lr_schedule, spec.optimizer.lr, steps)
    cast = {"X_train": data.X_train, "y_train": data.y_train, "X_test": data.X_test,
            "y_test": data.y_test, "W0": w0, "b0": b0, "a0": a0,
            "s": schedules.homotopy_s(spec), "lr": lr}
    return Inputs(spec=spec, batches=batches,
                  **{k: np.ascontiguousarray(v, dtype=dtype) for k, v in cast.items()})


# ---------------------------------------------------------------------------- files

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path | str, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz that ``numpy.load`` reads, byte-identical for identical arrays (numpy's
    own savez stamps the current time into the zip entries)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def inputs_arrays(inputs: Inputs) -> dict[str, np.ndarray]:
    """The arrays of inputs.npz: the spec's list plus the resolved spec (JSON) for provenance."""
    arrays = inputs.arrays()
    arrays["spec_json"] = np.array(json.dumps(inputs.spec.to_dict(), sort_keys=True))
    return arrays


def save_inputs(inputs: Inputs, path: Path | str) -> None:
    write_npz(path, inputs_arrays(inputs))


def load_inputs(path: Path | str, spec: RunSpec | None = None) -> Inputs:
    """Read inputs.npz. Its embedded spec must equal ``spec`` when one is given; a truncated,
    incomplete or inconsistent file raises InputsError naming the problem."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise InputsError(f"{path}: no such inputs file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputsError(f"{path}: not a readable inputs.npz ({err})") from None
    missing = [key for key in (*ARRAY_KEYS, "spec_json") if key not in arrays]
    if missing:
        raise InputsError(f"{path}: missing arrays {', '.join(missing)}")
    stored = json.loads(str(arrays.pop("spec_json")))
    if stored.get("spec_version") != SPEC_VERSION:
        raise InputsError(f"{path}: made for spec version {stored.get('spec_version')!r}, "
                          f"this suite reads version {SPEC_VERSION}")
    stored_spec = parse_spec(stored)
    if spec is not None and stored_spec != spec:
        raise InputsError(f"{path}: made for another spec (digest {stored_spec.digest()[:12]}, "
                          f"expected {spec.digest()[:12]})")
    spec = stored_spec
    steps, n = spec.total_steps, spec.task.n_train
    expected_shapes = {"X_train": (n, None), "y_train": (n,), "s": (steps,), "lr": (steps,),
                       "W0": (spec.model.width, None), "b0": (spec.model.width,),
                       "a0": (spec.model.width,)}
    for key, shape in expected_shapes.items():
        got = arrays[key].shape
        mismatch = any(e is not None and e != g for e, g in zip(shape, got, strict=False))
        if len(got) != len(shape) or mismatch:
            raise InputsError(f"{path}: array {key} has shape {got}, expected {shape}")
    batches = arrays.get("batches")
    if (spec.batch_size is None) != (batches is None):
        raise InputsError(f"{path}: batches present/absent does not match batch_size")
    if batches is not None and batches.shape != (steps, spec.batch_size):
        raise InputsError(f"{path}: batches has shape {batches.shape}, "
                          f"expected {(steps, spec.batch_size)}")
    return Inputs(spec=spec, batches=batches, **{key: arrays[key] for key in ARRAY_KEYS})
