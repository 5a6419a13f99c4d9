"""Train one batch of runs on one backend (rule train)."""

import sys

from hrta.batch import run_plan_batch
from hrta.cli import exit_without_teardown, quiet_frameworks

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115
quiet_frameworks()
w = snakemake.wildcards
run_plan_batch(snakemake.input.plan, w.phase, w.backend, int(w.batch),
               snakemake.params.runs_root, snakemake.output.manifest,
               missing=snakemake.params.missing)
exit_without_teardown()  # outputs written; skip the framework's slow teardown
