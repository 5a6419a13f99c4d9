"""Empirical NTK of one backend against the closed form, per width (rule theory_ntk_width)."""

import sys

from hrta import grid as hgrid
from hrta.aggregate import write_json, write_parquet
from hrta.cli import exit_without_teardown, quiet_frameworks
from hrta.theory_tables import width_table

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115
quiet_frameworks()

grid = hgrid.load_grid(snakemake.input.grid)
table, checks = width_table(grid, snakemake.wildcards.backend,
                            missing=snakemake.params.missing)
write_parquet(table, snakemake.output.table)
write_json(checks, snakemake.output.checks)
print(f"{len(table)} rows", {t: c["verdict"] for t, c in checks["checks"].items()})
exit_without_teardown()  # outputs written; skip the framework's slow teardown
