"""hrta-bench: the Homotopy Relaxation Training Algorithm (arXiv 2309.15244) as one spec, a
NumPy float64 reference and framework backends, with the tools to check that they agree."""

from hrta.spec import SPEC_VERSION

__version__ = "0.1.0"

__all__ = ["SPEC_VERSION", "__version__"]
