"""Discovery of backends through the ``hrta.backends`` entry-point group.

Built-in backends register in this project's pyproject.toml exactly as a third-party package
would in its own::

    [project.entry-points."hrta.backends"]
    mybackend = "my_package.module:MyBackend"

The entry point names a :class:`~hrta.backends.base.Backend` subclass (or instance).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from hrta.backends.base import Backend, BackendUnavailable

GROUP = "hrta.backends"
REFERENCE = "numpy"


class UnknownBackend(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class BrokenBackend(RuntimeError):
    """A registered entry point that fails to load (a bug in the plugin, not a missing
    framework: backend modules import their framework lazily)."""


@cache
def _entry_points() -> dict:
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    if REFERENCE not in found:
        raise RuntimeError("no hrta backends are registered: install the package "
                           "(pip install -e .) so that its entry points exist")
    return found


def backend_names() -> list[str]:
    """Every registered backend name, the reference first, then alphabetical."""
    names = sorted(_entry_points())
    names.remove(REFERENCE)
    return [REFERENCE, *names]


@cache
def get_backend(name: str) -> Backend:
    """The backend registered as ``name`` (its framework may still be missing: see
    ``Backend.is_available``)."""
    eps = _entry_points()
    if name not in eps:
        raise UnknownBackend(f"unknown backend {name!r}; registered: {', '.join(backend_names())}")
    try:
        obj = eps[name].load()
    except Exception as err:  # a plugin's import error must not take the suite down
        raise BrokenBackend(f"backend {name!r} ({eps[name].value}) failed to load: "
                            f"{type(err).__name__}: {err}") from err
    backend = obj() if isinstance(obj, type) else obj
    if not isinstance(backend, Backend):
        raise TypeError(f"entry point {name!r} does not name an hrta Backend")
    if backend.name != name:
        raise TypeError(f"entry point {name!r} loads a backend named {backend.name!r}")
    return backend


def available_backends() -> list[str]:
    """Registered backends that load and whose framework is installed."""
    names = []
    for name in backend_names():
        try:
            if get_backend(name).is_available():
                names.append(name)
        except BrokenBackend:
            continue
    return names


def require_backend(name: str) -> Backend:
    """The backend, or BackendUnavailable with its install command."""
    backend = get_backend(name)
    backend.require()
    return backend


__all__ = ["GROUP", "REFERENCE", "Backend", "BackendUnavailable", "BrokenBackend", "UnknownBackend",
           "available_backends", "backend_names", "get_backend", "require_backend"]
