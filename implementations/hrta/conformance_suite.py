"""The conformance suite as pytest tests, parametrised over backends by the ``backend_name``
parameter (``--backend NAME``, repeatable; default every registered backend).

Collected from the repository through ``tests/test_conformance.py`` and run on its own by
``hrta conformance --backend NAME``; the cases and checks live in :mod:`hrta.conformance`.
A backend whose framework is not installed is skipped with its install command as the reason;
one that is registered but fails to load fails every test with the import error.
"""

from __future__ import annotations

import pytest

from hrta import conformance as cf
from hrta.backends import registry
from hrta.backends.base import Backend


@pytest.fixture
def backend(backend_name: str) -> Backend:
    """The backend under test: skipped when its framework is missing, failed when broken."""
    try:
        found = registry.get_backend(backend_name)
    except registry.BrokenBackend as err:
        pytest.fail(str(err), pytrace=False)
    if not found.is_available():
        pytest.skip(f"backend {backend_name!r} is not installed: {found.install_hint}")
    return found


def _ids(cases) -> list[str]:
    return [case.id for case in cases]


POINT_CASES = cf.point_cases()


@pytest.mark.parametrize("case", POINT_CASES, ids=_ids(POINT_CASES))
def test_forward(backend: Backend, case: cf.PointCase) -> None:
    cf.check_forward(backend, case)


@pytest.mark.parametrize("case", POINT_CASES, ids=_ids(POINT_CASES))
def test_gradient(backend: Backend, case: cf.PointCase) -> None:
    cf.check_gradient(backend, case)


ONE_STEP_CASES = cf.one_step_cases()


@pytest.mark.parametrize("case", ONE_STEP_CASES, ids=_ids(ONE_STEP_CASES))
def test_one_step(backend: Backend, case: cf.Case) -> None:
    cf.check_one_step(backend, case)


DIVERGENCE_CASES = cf.divergence_cases()


@pytest.mark.parametrize("case", DIVERGENCE_CASES, ids=_ids(DIVERGENCE_CASES))
def test_divergence(backend: Backend, case: cf.Case) -> None:
    cf.check_divergence(backend, case)


TRAJECTORY_CASES = cf.trajectory_cases()


@pytest.mark.parametrize("case", TRAJECTORY_CASES, ids=_ids(TRAJECTORY_CASES))
def test_trajectory(backend: Backend, case: cf.Case) -> None:
    cf.check_trajectory(backend, case)


DETERMINISM_CASES = cf.determinism_cases()


@pytest.mark.parametrize("case", DETERMINISM_CASES, ids=_ids(DETERMINISM_CASES))
def test_determinism(backend: Backend, case: cf.Case) -> None:
    cf.check_determinism(backend, case)
