"""Run a batch of runs on one backend in one process.

The framework is imported once per batch (and a backend that caches its compiled training step
reuses it across the batch's runs, which :mod:`hrta.grid` orders so that runs of equal shapes
sit together). A batch is resumable: a run whose folder is already complete (``read_run``
accepts it and it holds the same spec, trained by the same backend) is not trained again, and
every run folder is written atomically (``hrta.run.write_run``), so a batch killed at any point
leaves complete folders or none. A run that raises does not stop the others; the batch then
fails at the end, naming every failed run, and writes no manifest.

Durability: the run folders of a batch are renamed into place without an fsync each (six
fsyncs per folder cost more than training a small run on a virtual disk); the batch calls
``os.sync()`` once before it writes its manifest, so every run a manifest lists is on disk,
and a folder that a power cut may have left unsynced is validated by ``read_run`` (files,
checksums, row counts) before it is ever reused.

The manifest (JSON, written atomically last) lists every run of the batch with its folder and
whether it was trained now or found complete; runs of a backend that is not installed are
listed as skipped (with ``missing="skip"``) together with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from hrta import atomic
from hrta.grid import Run, batch_runs

MISSING = ("fail", "skip")


class _BatchBackend:
    """A backend whose library versions are looked up once per batch (they cannot change
    within a process, and importlib.metadata lookups cost tens of milliseconds per run)."""

    def __init__(self, backend):
        self._backend = backend
        self._versions = backend.versions()

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def __getattr__(self, name):
        return getattr(self._backend, name)


class BatchError(RuntimeError):
    """Some runs of a batch failed; the message names them (their tracebacks are in the log)."""


def run_dir(runs_root: Path | str, run: Run) -> Path:
    """results/<grid>/runs/<phase>/<backend>/<run_id>."""
    return Path(runs_root) / run.phase / run.backend / run.run_id


def is_complete(folder: Path, run: Run) -> bool:
    """True when ``folder`` is a complete run folder of exactly this spec and backend."""
    from hrta.run import RunFolderError, read_run

    if not folder.is_dir():
        return False
    try:
        existing = read_run(folder)
    except (RunFolderError, ValueError, OSError):
        return False
    return (existing.metrics.get("spec_digest") == run.spec.digest()
            and existing.metrics.get("backend") == run.backend)


def _remove_leftovers(parent: Path, run_ids: set[str]) -> int:
    """Remove the staging folders that a killed write of one of ``run_ids`` left in ``parent``
    (``.<run_id>.<random>.partial`` and ``.<run_id>.old-<pid>``, see hrta.atomic); other
    batches' staging folders in the same parent are left alone. Returns how many."""
    if not parent.is_dir():
        return 0
    removed = 0
    for entry in os.scandir(parent):
        name = entry.name
        if not name.startswith("."):
            continue
        if name.endswith(".partial"):
            owner = name[1:].rsplit(".", 2)[0]
        elif ".old-" in name:
            owner = name[1:].rsplit(".old-", 1)[0]
        else:
            continue
        if owner in run_ids:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def run_batch(runs: list[Run], runs_root: Path | str, *, missing: str = "fail",
              log: Callable[[str], None] = print) -> dict:
    """Train every run of ``runs`` (one backend) that has no complete folder yet; return the
    manifest. Raises BackendUnavailable (missing="fail") or BatchError."""
    from hrta.backends import require_backend
    from hrta.backends.base import BackendUnavailable
    from hrta.backends.registry import BrokenBackend
    from hrta.inputs import build_inputs
    from hrta.run import execute, write_run

    if missing not in MISSING:
        raise ValueError(f"missing: expected one of {', '.join(MISSING)}, got {missing!r}")
    backends = {run.backend for run in runs}
    if len(backends) > 1:
        raise ValueError(f"a batch runs on one backend, got {sorted(backends)}")
    started = time.perf_counter()
    manifest = {"runs": [], "skipped": [], "trained": 0, "reused": 0,
                "import_seconds": 0.0, "seconds": 0.0}
    if not runs:
        return manifest
    name = runs[0].backend
    pending = []
    for run in runs:
        folder = run_dir(runs_root, run)
        if is_complete(folder, run):
            manifest["runs"].append({"run_id": run.run_id, "run_dir": str(folder),
                                     "status": "reused"})
            manifest["reused"] += 1
        else:
            pending.append((run, folder))
    log(f"{name}: {len(runs)} runs, {manifest['reused']} already complete, "
        f"{len(pending)} to train")
    if not pending:
        manifest["seconds"] = time.perf_counter() - started
        return manifest
    try:
        backend = _BatchBackend(require_backend(name))
    except (BackendUnavailable, BrokenBackend) as err:
        if missing == "fail":
            raise
        log(f"{name}: skipped, {err}")
        manifest["skipped"] = [{"run_id": run.run_id, "reason": str(err)} for run, _ in pending]
        manifest["seconds"] = time.perf_counter() - started
        return manifest
    manifest["import_seconds"] = time.perf_counter() - started
    parents = {folder.parent for _, folder in pending}
    ids = {run.run_id for run, _ in pending}
    removed = sum(_remove_leftovers(parent, ids) for parent in parents)
    if removed:
        log(f"{name}: removed {removed} staging folder(s) left by an interrupted write")
    failed = []
    for i, (run, folder) in enumerate(pending, start=1):
        t0 = time.perf_counter()
        try:
            outcome = execute(backend, build_inputs(run.spec))
            write_run(outcome, folder, force=folder.exists(), durable=False)
        except Exception as err:  # one bad run must not lose the others
            failed.append(f"{run.run_id} ({type(err).__name__}: {err})")
            log(f"[{i}/{len(pending)}] {run.run_id}: FAILED")
            log(traceback.format_exc())
            continue
        m = outcome.metrics
        state = f"diverged at step {m['diverged_step']}" if m["diverged"] else \
            f"train_loss={m['train_loss']:.3e}"
        log(f"[{i}/{len(pending)}] {run.run_id}: {state} ({time.perf_counter() - t0:.2f} s, "
            f"compile {m['compile_seconds']:.2f} s)")
        manifest["runs"].append({"run_id": run.run_id, "run_dir": str(folder),
                                 "status": "trained"})
        manifest["trained"] += 1
    os.sync()  # every folder written above is on disk before any manifest lists it
    manifest["seconds"] = time.perf_counter() - started
    if failed:
        raise BatchError(f"{len(failed)} of {len(runs)} runs on {name} failed: "
                         + "; ".join(failed))
    return manifest


def run_plan_batch(plan_path: Path | str, phase: str, backend: str, batch: int,
                   runs_root: Path | str, manifest_path: Path | str, *, missing: str = "fail",
                   log: Callable[[str], None] = print) -> dict:
    """Run batch ``batch`` of (phase, backend) from a plan file and write its manifest."""
    plan = json.loads(Path(plan_path).read_text())
    runs = batch_runs(plan, phase, backend, batch)
    if not runs:
        raise ValueError(f"{plan_path}: no runs in batch {batch} of phase {phase!r} on "
                         f"backend {backend!r}")
    manifest = run_batch(runs, runs_root, missing=missing, log=log)
    manifest = {"grid": plan["grid"], "phase": phase, "backend": backend, "batch": batch,
                **manifest}
    Path(manifest_path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    log(f"{backend}: batch {batch} of {phase} done in {manifest['seconds']:.1f} s "
        f"({manifest['trained']} trained, {manifest['reused']} reused, "
        f"{len(manifest['skipped'])} skipped)")
    return manifest

