"""Backends: the NumPy reference and the framework implementations, found by entry point."""

from hrta.backends.base import Backend, BackendUnavailable, TrainResult
from hrta.backends.registry import available_backends, backend_names, get_backend, require_backend

__all__ = ["Backend", "BackendUnavailable", "TrainResult", "available_backends",
           "backend_names", "get_backend", "require_backend"]
