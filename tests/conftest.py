"""Shared pytest configuration of the hrta-bench tests."""

from __future__ import annotations

import pytest

from hrta import conformance


# ---- backend conformance suite: ``--backend NAME`` (repeatable; default all registered) ----
def pytest_addoption(parser):
    conformance.add_pytest_options(parser)


def pytest_generate_tests(metafunc):
    conformance.parametrize_backends(metafunc)


# ---- reliability tests (issue 7): what they actually tried, printed in the run's summary ----
RELIABILITY = {"inputs tried": 0, "faults injected": 0, "results lost": 0}


@pytest.fixture
def reliability() -> dict[str, int]:
    """Counters the reliability tests add to as they go: ``reliability["inputs tried"] += 1``
    per malformed input fed to the suite, ``"faults injected"`` per kill or corruption, and
    ``"results lost"`` per finished result that a fault destroyed (the tests assert it stays 0)."""
    return RELIABILITY


def pytest_sessionfinish(session):
    """Under pytest-xdist, hand this worker's counters to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability"] = dict(RELIABILITY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """Under pytest-xdist (controller): add a finished worker's counters to the summary's."""
    for key, value in getattr(node, "workeroutput", {}).get("reliability", {}).items():
        RELIABILITY[key] += value


def pytest_terminal_summary(terminalreporter):
    if any(RELIABILITY.values()):
        terminalreporter.write_sep("-", "reliability")
        terminalreporter.write_line(", ".join(f"{key}: {value}"
                                              for key, value in RELIABILITY.items()))
