"""environment.yml and pyproject.toml declare the same packages with the same version pins."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name, where they differ
NOT_PACKAGES = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    """'jax[cpu]>=0.10,<0.11' -> ('jax', '>=0.10,<0.11'); names normalised per PEP 503."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", requirement)
    assert match, requirement
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return CONDA_NAMES.get(name, name), match.group(3).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for reqs in project["optional-dependencies"].values():
        requirements += [r for r in reqs if not r.startswith("hrta-bench[")]
    return dict(_split(r) for r in requirements)


def environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    requirements: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            requirements += [r for r in dep["pip"] if not r.startswith("-e")]
        else:
            requirements.append(dep.replace("=", "==", 1) if re.fullmatch(r"[\w.-]+=[\w.]+", dep)
                                else dep)
    parsed = dict(_split(r) for r in requirements)
    return {k: v for k, v in parsed.items() if k not in NOT_PACKAGES}


def test_environment_lists_the_same_packages_as_pyproject():
    assert environment_requirements() == pyproject_requirements()


def test_all_extra_covers_every_framework_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    (all_requirement,) = extras["all"]
    included = set(re.search(r"\[(.*)\]", all_requirement).group(1).split(","))
    assert {"torch", "jax", "tensorflow"} <= included


def test_torch_is_pinned_to_the_cpu_wheel_on_disk():
    assert pyproject_requirements()["torch"] == "==2.13.0"


def test_builtin_backends_register_through_entry_points():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["entry-points"]["hrta.backends"]) == {"numpy", "torch", "jax",
                                                             "tensorflow"}
