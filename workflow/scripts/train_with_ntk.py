"""Train a backend's first batch of evaluation runs, then check its empirical NTK against the
closed form, in one process (rule train_with_ntk): the framework is imported once."""

import sys

from hrta import grid as hgrid
from hrta.batch import run_plan_batch
from hrta.cli import exit_without_teardown, quiet_frameworks
from hrta.theory_tables import write_width_check

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115
quiet_frameworks()
backend = snakemake.wildcards.backend
run_plan_batch(snakemake.input.plan, "eval", backend, 0, snakemake.params.runs_root,
               snakemake.output.manifest, missing=snakemake.params.missing)
print(write_width_check(hgrid.load_grid(snakemake.input.grid), backend, snakemake.output.table,
                        snakemake.output.checks, missing=snakemake.params.missing))
exit_without_teardown()  # outputs written; skip the framework's slow teardown
