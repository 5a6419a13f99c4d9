# Shared definitions: the grid, where its outputs go, and the training jobs' layout, all
# computed when the workflow is parsed (the layout does not depend on the tuning's results).
import re

from snakemake.exceptions import WorkflowError

from hrta import grid as hgrid

REPO = Path(workflow.basedir)
ENV = REPO / "environment.yml"


def grid_file(value):
    """benchmarks/<name>.yaml for a name, else the path itself."""
    if value.endswith((".yaml", ".yml")) or "/" in value:
        return Path(value).resolve()
    return REPO / "benchmarks" / f"{value}.yaml"


def backend_status(names):
    """{backend: None if it can run here, else the reason}."""
    from hrta.backends import get_backend
    from hrta.backends.registry import BrokenBackend

    status = {}
    for name in names:
        try:
            backend = get_backend(name)
        except BrokenBackend as err:
            status[name] = str(err)
            continue
        status[name] = None if backend.is_available() else (
            f"{backend.framework} is not installed; install it with: {backend.install_hint}")
    return status


GRID_FILE = grid_file(config["grid"])
with exit_on_bad_input():  # one line naming the field, exit status 2
    GRID = hgrid.load_grid(GRID_FILE)
OUT = f"{config['results']}/{GRID.name}"
RUNS_PER_JOB = config["runs_per_job"] or GRID["runs_per_job"]
STATUS = backend_status(sorted(set(hgrid.grid_backends(GRID)) | set(hgrid.theory_backends(GRID))))
MISSING = {name: why for name, why in STATUS.items() if why}
for _needed in (GRID["tuning"]["backend"], GRID["evaluation"]["backend"]):
    if _needed in MISSING:
        raise WorkflowError(f"backend {_needed!r} (tuning or evaluation) cannot run: "
                            f"{MISSING[_needed]}")
if MISSING and config["missing_backends"] == "fail":
    raise WorkflowError("; ".join(f"backend {n!r}: {why}" for n, why in MISSING.items())
                        + " (or run with --config missing_backends=skip)")
BACKENDS = sorted(name for name in STATUS if name not in MISSING)
LAYOUT = hgrid.layout(GRID, RUNS_PER_JOB, set(BACKENDS))
THEORY_BACKENDS = [b for b in hgrid.theory_backends(GRID) if b in BACKENDS]
# A theory backend that also trains evaluation runs checks its empirical NTK in its first
# evaluation job (rule train_with_ntk), where the framework is already imported (TensorFlow's
# import alone takes 4.5 s, jax's and torch's 1.5 s); the others get a job of their own (rule
# theory_ntk_width).
NTK_WITH_TRAINING = [b for b in THEORY_BACKENDS if LAYOUT.get(("eval", b), 0) > 0]
NTK_ALONE = [b for b in THEORY_BACKENDS if b not in NTK_WITH_TRAINING]


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


# Longest job first: of the framework jobs that are ready together (a phase's training batches,
# the empirical-NTK jobs), those of the frameworks that are slowest to start (import and
# compilation) start first, so that quick ones fill the other core at the end instead of one
# slow job running alone. Measured on the smoke grid's evaluation jobs (CPU seconds, NTK check
# included): tensorflow 13-14, jax 6-7, torch 2-3, numpy under 1. Other backends (plugins)
# rank 0.
START_UP_RANK = {"tensorflow": 3, "jax": 2, "torch": 1}


def start_up_rank(wildcards):
    return START_UP_RANK.get(wildcards.backend, 0)


wildcard_constraints:
    phase="tune|eval",
    backend="[A-Za-z0-9_.-]+",
    batch="[0-9]+",


def manifests(phase):
    """The batch manifests of one phase, over every backend."""
    return [f"{OUT}/batches/{phase}/{backend}/{batch}.json"
            for (p, backend), count in sorted(LAYOUT.items()) if p == phase
            for batch in range(count)]


def final_outputs():
    outputs = [f"{OUT}/results.parquet", f"{OUT}/histories.parquet",
               f"{OUT}/selection.parquet", f"{OUT}/skipped.json",
               f"{OUT}/agreement.parquet", f"{OUT}/agreement.json"]
    if GRID["theory"] is not None:
        outputs += [f"{OUT}/theory/ntk_spectrum.parquet", f"{OUT}/theory/ntk_width.parquet",
                    f"{OUT}/theory/rates.parquet", f"{OUT}/theory/checks.json"]
    return outputs
