"""An example hrta-bench backend plugin (see docs/adding-a-backend.md in hrta-bench)."""

from hrta_backend_example.einsum_backend import EinsumBackend

__all__ = ["EinsumBackend"]
