"""Every non-reference evaluation run against its NumPy reference (rule agreement)."""

import sys

from hrta.aggregate import write_json, write_parquet
from hrta.agreement import agreement_table

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

table, summary = agreement_table(snakemake.input.plan, snakemake.input.manifests)
write_parquet(table, snakemake.output.table)
write_json(summary, snakemake.output.summary)
print(f"{summary['compared']} runs compared, {summary['failed']} beyond tolerance, "
      f"{len(summary['not_compared'])} not compared")
