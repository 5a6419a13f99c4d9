"""Predicted against measured GD rates per stage of the evaluation runs (rule theory_rates)."""

import sys

from hrta.aggregate import write_parquet
from hrta.theory_tables import rates_table

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

manifests = snakemake.input.manifests if snakemake.params.enabled else []
table = rates_table(snakemake.input.plan, manifests)
write_parquet(table, snakemake.output.table)
print(f"{len(table)} segments of {table['run_id'].nunique()} GD runs")
