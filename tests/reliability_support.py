"""Helpers shared by the reliability tests (tests/test_reliability_*.py): tiny valid inputs, the
console scripts, a subprocess environment in which chosen frameworks look uninstalled, and
byte snapshots of folders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HRTA = BIN / "hrta"
SNAKEMAKE = BIN / "snakemake"
SMOKE_GRID = REPO / "benchmarks" / "smoke.yaml"

# A small valid run spec: two stages, minibatches, a schedule; trains in well under a second.
SPEC = {
    "task": {"name": "sin1d", "n_train": 12, "n_test": 16},
    "model": {"width": 6},
    "homotopy": [{"s": 1.5, "steps": 30}, {"s_from": 1.5, "s_to": 1.0, "steps": 30}],
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.5},
    "lr_schedule": {"name": "step", "step_size": 20, "gamma": 0.5},
    "batch_size": 6,
    "seed": 3,
    "log_every": 7,
}

# Timing and provenance fields of metrics.json that legitimately differ between two runs.
VOLATILE_METRICS = ("wall_seconds", "compile_seconds", "train_seconds", "us_per_step", "created")


def write_spec(folder: Path, doc: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under ``folder`` (hidden ones included)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def stable_metrics(folder: Path) -> dict:
    """metrics.json without its timing fields (and the file checksums, which cover bytes that
    are compared separately)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in VOLATILE_METRICS}


BLOCKER = '''\
"""Installed by the reliability tests: the frameworks named in HRTA_TEST_UNINSTALL look
uninstalled: importlib.util.find_spec returns None and import raises ModuleNotFoundError."""
import importlib.machinery
import os
import sys

_BLOCKED = {n for n in os.environ.get("HRTA_TEST_UNINSTALL", "").split(",") if n}
_PATH_FINDER = importlib.machinery.PathFinder


class _PathFinderWithout:
    """sys.meta_path's PathFinder, blind to the blocked top-level packages."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            return None
        return _PATH_FINDER.find_spec(name, path, target)

    @staticmethod
    def invalidate_caches():
        _PATH_FINDER.invalidate_caches()

    @staticmethod
    def find_distributions(*args, **kwargs):
        return _PATH_FINDER.find_distributions(*args, **kwargs)


if _BLOCKED:
    sys.meta_path[:] = [_PathFinderWithout if f is _PATH_FINDER else f for f in sys.meta_path]
'''


def uninstalled_env(tmp: Path, frameworks: list[str]) -> dict[str, str]:
    """An environment for subprocesses (and their children) in which ``frameworks`` cannot be
    imported, as if uninstalled: a sitecustomize.py on PYTHONPATH installs the blocker."""
    hook = tmp / "uninstall_hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), *filter(None, [env.get("PYTHONPATH")])])
    env["HRTA_TEST_UNINSTALL"] = ",".join(frameworks)
    return env
