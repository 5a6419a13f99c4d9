"""Where a result came from: suite and spec versions, git commit, host, library versions."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import cache
from pathlib import Path

from hrta import __version__
from hrta.spec import SPEC_VERSION


@cache
def git_state(root: str | None = None) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the checkout holding this package."""
    root = root or str(Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", root, "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


@cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(),
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def suite() -> dict:
    return {"suite_version": __version__, "spec_version": SPEC_VERSION, **git_state()}
