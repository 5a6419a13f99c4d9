"""Empirical NTK of one backend against the closed form, per width (rule theory_ntk_width:
a theory backend with no evaluation runs; the others' are made by rule train_with_ntk)."""

import sys

from hrta import grid as hgrid
from hrta.cli import exit_without_teardown, quiet_frameworks
from hrta.theory_tables import write_width_check

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115
quiet_frameworks()
print(write_width_check(hgrid.load_grid(snakemake.input.grid), snakemake.wildcards.backend,
                        snakemake.output.table, snakemake.output.checks,
                        missing=snakemake.params.missing))
exit_without_teardown()  # outputs written; skip the framework's slow teardown
