"""A framework that is not installed (issue 7, item 5, the command-line and batch half; the
pipeline half is in tests/test_reliability_pipeline.py).

The framework is made uninstalled for real in a subprocess (a sitecustomize hook hides it from
the import system, so that ``importlib.util.find_spec`` says it is absent and ``import`` fails):
``hrta train --backend NAME`` then exits 3 with one line that says how to install it, and
writes nothing; ``hrta backends`` lists it as not installed. In-process, the batch runner of the
pipeline skips a backend whose framework is missing when told to, listing every skipped run with
the reason, and otherwise stops with the install command.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from reliability_support import HRTA, SPEC, snapshot, uninstalled_env, write_spec

from hrta.backends import backend_names, get_backend
from hrta.backends.base import BackendUnavailable
from hrta.backends.registry import BrokenBackend
from hrta.batch import run_batch
from hrta.grid import Run
from hrta.spec import parse_spec


def _framework_backends() -> list[str]:
    """Registered backends that need a framework other than numpy (their modules load)."""
    names = []
    for name in backend_names():
        try:
            backend = get_backend(name)
        except BrokenBackend:
            continue
        if backend.framework not in ("", "numpy"):
            names.append(name)
    return names


@pytest.mark.skipif(not HRTA.exists(), reason="the hrta console script is not installed")
@pytest.mark.parametrize("name", _framework_backends())
def test_train_on_an_uninstalled_framework_says_how_to_install_it(tmp_path, reliability, name):
    backend = get_backend(name)
    spec = write_spec(tmp_path, SPEC)
    existing = tmp_path / "existing"
    (existing / "keep").mkdir(parents=True)
    (existing / "keep" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    env = uninstalled_env(tmp_path.parent / f"hook-{name}", [backend.framework])
    reliability["faults injected"] += 1
    for out in (tmp_path / "new", existing / "keep"):
        proc = subprocess.run([str(HRTA), "train", str(spec), "--backend", name, "--out",
                               str(out), "--force"], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"install it with: {backend.install_hint}" in lines[0]
        assert backend.framework in lines[0] and repr(name) in lines[0]
    assert snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["existing", "spec.yaml"]


@pytest.mark.skipif(not HRTA.exists(), reason="the hrta console script is not installed")
def test_backends_lists_uninstalled_frameworks_with_install_command(tmp_path):
    names = _framework_backends()
    env = uninstalled_env(tmp_path, sorted({get_backend(n).framework for n in names}))
    listing = subprocess.run([str(HRTA), "backends"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert listing.returncode == 0, listing.stderr
    lines = {x.split()[0]: x for x in listing.stdout.splitlines()}
    assert "available" in lines["numpy"]
    for name in names:
        assert "not installed" in lines[name] and get_backend(name).install_hint in lines[name]


def _unavailable(monkeypatch) -> str:
    """Make the first framework backend look uninstalled in this process; return its name."""
    names = _framework_backends()
    if not names:
        pytest.skip("no framework backend is registered")
    backend = get_backend(names[0])
    monkeypatch.setattr(type(backend), "is_available", lambda self: False)
    return names[0]


def _runs(backend: str) -> list[Run]:
    return [Run(f"r{seed}", "eval", backend, parse_spec({**SPEC, "seed": seed}), {})
            for seed in (0, 1, 2)]


def test_batch_skips_a_missing_backend_when_told_to(tmp_path, monkeypatch, reliability):
    name = _unavailable(monkeypatch)
    reliability["faults injected"] += 1
    manifest = run_batch(_runs(name), tmp_path, missing="skip", log=lambda _: None)
    assert manifest["trained"] == 0 and manifest["runs"] == []
    assert [s["run_id"] for s in manifest["skipped"]] == ["r0", "r1", "r2"]
    hint = get_backend(name).install_hint
    assert all(f"install it with: {hint}" in s["reason"] for s in manifest["skipped"])
    assert list(tmp_path.iterdir()) == []


def test_batch_stops_on_a_missing_backend_by_default(tmp_path, monkeypatch, reliability):
    name = _unavailable(monkeypatch)
    reliability["faults injected"] += 1
    with pytest.raises(BackendUnavailable, match="install it with"):
        run_batch(_runs(name), tmp_path, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []
