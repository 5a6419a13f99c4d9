"""The backend conformance suite (hrta.conformance_suite), collected here for ``make test``.

Select backends with ``pytest tests/test_conformance.py --backend NAME`` (repeatable); the
default is every registered backend, the installed example plugin (numpy-einsum) included.
"""

from hrta import conformance_suite as suite

# pytest collects these in this order (the suite module's own order): compiling backends
# build each program structure once and the later tests reuse it.
backend = suite.backend
test_forward = suite.test_forward
test_gradient = suite.test_gradient
test_one_step = suite.test_one_step
test_divergence = suite.test_divergence
test_trajectory = suite.test_trajectory
test_determinism = suite.test_determinism
