"""The performance harness (issue 6): ``python -m benchmarks.perf --help``."""
