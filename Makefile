# hrta-bench: two commands from a fresh clone.
#   make test       create or reuse .venv, install everything, run the whole test suite
#   make reproduce  create or reuse .venv, install everything, run the pipeline (default grid)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2
GRID ?= default
# Two pytest-xdist workers (the CI machine has 2 cores); `make test PYTEST_ARGS=` runs serially.
PYTEST_ARGS ?= -n 2

.PHONY: test reproduce install lint smoke perf clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the dependency declarations change.
$(STAMP): $(BIN)/python pyproject.toml examples/hrta-backend-example/pyproject.toml
	$(BIN)/pip install --quiet -e ".[all,dev]" -e examples/hrta-backend-example
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

reproduce: install
	$(BIN)/snakemake --cores $(CORES) --config grid=$(GRID)

smoke: install
	$(BIN)/snakemake --cores $(CORES) --config grid=smoke

# Performance harness (docs/performance.md); e.g. PERF_ARGS="--pipeline all".
perf: install
	$(BIN)/python -m benchmarks.perf $(PERF_ARGS)

clean-venv:
	rm -rf $(VENV)
