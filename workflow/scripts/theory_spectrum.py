"""Closed-form NTK spectrum against s per task (rule theory_spectrum)."""

import sys

from hrta import grid as hgrid
from hrta.aggregate import write_json, write_parquet
from hrta.theory_tables import spectrum_table

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

grid = hgrid.load_grid(snakemake.input.grid)
table, checks = spectrum_table(grid)
write_parquet(table, snakemake.output.table)
write_json(checks, snakemake.output.checks)
print({task: check["verdict"] for task, check in checks.items()})
