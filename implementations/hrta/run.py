"""One run from spec to run folder (HRTA-SPEC.md section 7), for any backend.

``execute`` asks a backend to train and turns its :class:`TrainResult` into the history rows
and metrics that every backend shares; ``write_run`` writes the folder atomically;
``read_run`` reads one back and rejects incomplete or foreign folders.

Compatibility: ``read_run`` accepts a folder only when it was written for this spec version
(``spec_version``) by an hrta-bench of the same major.minor version (``suite_version``; a patch
release changes no file format and no result), and when inputs.npz, history.csv and params.npz
still have the SHA-256 digests that metrics.json lists under ``files`` (a truncated, edited or
swapped file is caught even where it still parses).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hrta import __version__, atomic, model, provenance
from hrta.backends.base import Backend, Progress, TrainResult
from hrta.inputs import Inputs, inputs_arrays, load_inputs, write_npz
from hrta.spec import SPEC_VERSION

HISTORY_COLUMNS = ("step", "s", "lr", "train_loss")
RUN_FILES = ("inputs.npz", "history.csv", "metrics.json", "params.npz")
CHECKSUMMED = ("inputs.npz", "history.csv", "params.npz")  # digests in metrics.json "files"


class RunFolderError(ValueError):
    """A run folder that is incomplete, corrupt or from an incompatible suite or spec."""


@dataclass
class RunOutcome:
    inputs: Inputs
    result: TrainResult
    history: list[tuple[int, float, float, float]]
    metrics: dict


def history_rows(inputs: Inputs, result: TrainResult) -> list[tuple[int, float, float, float]]:
    """Rows (step, s, lr, train_loss): every k < K with k % log_every == 0, then step K at
    theta_K with s_{K-1}, lr_{K-1}; a diverged run ends with the divergence step instead."""
    spec = inputs.spec
    steps = spec.total_steps
    end = result.steps_run if result.diverged_step is None else result.diverged_step
    picked = list(range(0, min(end, steps - 1) + 1, spec.log_every))
    if not picked or picked[-1] != end:
        picked.append(end)
    rows = []
    for k in picked:
        j = min(k, steps - 1)
        rows.append((k, float(inputs.s[j]), float(inputs.lr[j]), float(result.losses[k])))
    return rows


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def execute(backend: Backend, inputs: Inputs, progress: Progress | None = None) -> RunOutcome:
    """Train ``inputs`` on ``backend`` and assemble history and metrics (no files written)."""
    spec = inputs.spec
    started = time.perf_counter()
    result = backend.train(inputs, progress)
    wall = time.perf_counter() - started
    _check_result(inputs, result, backend.name)
    params = {k: np.asarray(v, dtype=inputs.dtype) for k, v in result.params.items()}
    result.params = params
    s_last = float(inputs.s[-1])
    finite = all(np.all(np.isfinite(v)) for v in params.values())
    with np.errstate(all="ignore"):
        tests = (model.test_metrics(params, inputs.X_test, inputs.y_test, s_last) if finite
                 else {"test_mse": math.nan, "test_rel_l2": math.nan})
    steps_run = result.steps_run
    metrics = {
        "backend": backend.name,
        "dtype": spec.dtype,
        "seed": spec.seed,
        "task": spec.task.name,
        "spec_digest": spec.digest(),
        "steps": spec.total_steps,
        "steps_run": steps_run,
        "gradient_evaluations": steps_run,
        "train_loss": _finite_or_none(float(result.losses[-1])),
        "initial_train_loss": _finite_or_none(float(result.losses[0])),
        "test_mse": _finite_or_none(tests["test_mse"]),
        "test_rel_l2": _finite_or_none(tests["test_rel_l2"]),
        "diverged": result.diverged_step is not None,
        "diverged_step": result.diverged_step,
        "wall_seconds": wall,
        "compile_seconds": result.compile_seconds,
        "train_seconds": result.train_seconds,
        "us_per_step": 1e6 * result.train_seconds / max(steps_run, 1),
        "device": result.device,
        "versions": backend.versions(),
        "details": result.details,
        "host": provenance.host(),
        **provenance.suite(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return RunOutcome(inputs, result, history_rows(inputs, result), metrics)


def _check_result(inputs: Inputs, result: TrainResult, name: str) -> None:
    steps = inputs.spec.total_steps
    expected = steps + 1 if result.diverged_step is None else result.diverged_step + 1
    if result.losses.ndim != 1 or len(result.losses) != expected:
        raise RuntimeError(f"backend {name!r} returned {result.losses.shape} losses, "
                           f"expected ({expected},)")
    for key, ref in (("W", inputs.W0), ("b", inputs.b0), ("a", inputs.a0)):
        got = np.shape(result.params.get(key))
        if got != ref.shape:
            raise RuntimeError(f"backend {name!r} returned parameter {key} of shape {got}, "
                               f"expected {ref.shape}")


def history_csv(rows: list[tuple[int, float, float, float]]) -> str:
    """CSV text with full float precision (repr round-trips exactly)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for step, s, lr, loss in rows:
        writer.writerow((step, repr(s), repr(lr), repr(loss)))
    return buffer.getvalue()


def write_run(outcome: RunOutcome, out: Path | str, *, force: bool = False,
              durable: bool = True) -> Path:
    """Write the run folder atomically: it appears complete or not at all; with ``force`` an
    existing folder is replaced only once the new one is complete. ``durable=False``: no
    fsync (see :func:`hrta.atomic.staged_folder`); the caller syncs."""
    out = Path(out)
    with atomic.staged_folder(out, replace=force, durable=durable) as staging:
        write_npz(staging / "inputs.npz", inputs_arrays(outcome.inputs))
        write_npz(staging / "params.npz", outcome.result.params)
        (staging / "history.csv").write_text(history_csv(outcome.history))
        files = {name: _sha256(staging / name) for name in CHECKSUMMED}
        metrics = {**outcome.metrics, "files": files}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def suite_compatible(found: Any) -> bool:
    """True when results written by hrta-bench version ``found`` may be read and merged by this
    suite: the same major.minor version (patch releases differ in neither formats nor
    results); anything that is not a version string is incompatible."""
    if not isinstance(found, str):
        return False
    parts, ours = found.split("."), __version__.split(".")
    return len(parts) >= 2 and all(p.isdigit() for p in parts[:2]) and parts[:2] == ours[:2]


@dataclass
class RunFolder:
    path: Path
    inputs: Inputs
    history: dict[str, np.ndarray]  # columns of history.csv
    metrics: dict
    params: dict[str, np.ndarray]


def read_history(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header) != HISTORY_COLUMNS:
                raise RunFolderError(f"{path}: expected header {','.join(HISTORY_COLUMNS)}, "
                                     f"got {header}")
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise RunFolderError(f"{path}: not a CSV text file ({err})") from None
    try:
        steps = np.array([int(r[0]) for r in rows], dtype=np.int64)
        values = np.array([[float(x) for x in r[1:4]] for r in rows], dtype=np.float64)
    except (ValueError, IndexError) as err:
        raise RunFolderError(f"{path}: malformed row ({err})") from None
    values = values.reshape(-1, 3)
    return {"step": steps, "s": values[:, 0], "lr": values[:, 1], "train_loss": values[:, 2]}


def read_run(path: Path | str) -> RunFolder:
    """Read a run folder written by any backend; reject incomplete, corrupt or foreign ones."""
    path = Path(path)
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    if missing:
        raise RunFolderError(f"{path}: not a complete run folder (missing {', '.join(missing)})")
    try:
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise RunFolderError(f"{path}/metrics.json: not valid JSON ({err})") from None
    if not isinstance(metrics, dict):
        raise RunFolderError(f"{path}/metrics.json: expected a JSON object, got "
                             f"{type(metrics).__name__}")
    if metrics.get("spec_version") != SPEC_VERSION:
        raise RunFolderError(f"{path}: written for spec version {metrics.get('spec_version')!r}, "
                             f"this suite reads version {SPEC_VERSION}")
    if not suite_compatible(metrics.get("suite_version")):
        raise RunFolderError(f"{path}: written by suite version "
                             f"{metrics.get('suite_version')!r}, this suite ({__version__}) "
                             f"reads results of {'.'.join(__version__.split('.')[:2])}.x only")
    try:
        inputs = load_inputs(path / "inputs.npz")
    except ValueError as err:
        raise RunFolderError(str(err)) from None
    if metrics.get("spec_digest") != inputs.spec.digest():
        raise RunFolderError(f"{path}: metrics.json and inputs.npz describe different specs")
    history = read_history(path / "history.csv")
    expected = history_rows(inputs, _stub_result(inputs, metrics, path))
    if len(history["step"]) != len(expected) or list(history["step"]) != [r[0] for r in expected]:
        raise RunFolderError(f"{path}/history.csv: has {len(history['step'])} rows, expected "
                             f"{len(expected)} (steps {expected[0][0]}..{expected[-1][0]})")
    try:
        with np.load(path / "params.npz", allow_pickle=False) as archive:
            params = {key: archive[key] for key in ("W", "b", "a")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise RunFolderError(f"{path}/params.npz: unreadable ({err})") from None
    for key, ref in (("W", inputs.W0), ("b", inputs.b0), ("a", inputs.a0)):
        if params[key].shape != ref.shape or params[key].dtype != ref.dtype:
            raise RunFolderError(f"{path}/params.npz: {key} has shape {params[key].shape} "
                                 f"{params[key].dtype}, expected {ref.shape} {ref.dtype}")
    files = metrics.get("files", {})
    if not isinstance(files, dict):
        raise RunFolderError(f"{path}/metrics.json: files: expected a mapping of checksums")
    for name in CHECKSUMMED:
        if name in files and files[name] != _sha256(path / name):
            raise RunFolderError(f"{path}/{name}: does not match its checksum in metrics.json "
                                 f"(truncated, edited or taken from another run)")
    return RunFolder(path, inputs, history, metrics, params)


def _stub_result(inputs: Inputs, metrics: dict, path: Path) -> TrainResult:
    """A result with the right length only, to recompute which history rows must exist."""
    steps = inputs.spec.total_steps
    steps_run = metrics.get("steps_run", steps)
    diverged = metrics.get("diverged_step")
    for key, value in (("steps_run", steps_run), ("diverged_step", diverged)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= steps):
            raise RunFolderError(f"{path}/metrics.json: {key}: expected an integer in "
                                 f"[0, {steps}], got {value!r}")
    return TrainResult(losses=np.zeros(steps_run + 1), params={}, diverged_step=diverged,
                       compile_seconds=0.0, train_seconds=0.0)
