"""The tidy tables of every run and every logged step (rule aggregate)."""

import sys

from hrta import grid as hgrid
from hrta.aggregate import build_tables, write_json, write_parquet

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

grid = hgrid.load_grid(snakemake.input.grid, snakemake.params.name)
results, histories, skipped = build_tables(snakemake.input.plans,
                                           snakemake.input.manifests,
                                           grid.name, grid.thresholds)
write_parquet(results, snakemake.output.results)
write_parquet(histories, snakemake.output.histories)
write_json({"missing_backends": snakemake.params.missing_backends,
            "skipped_runs": skipped}, snakemake.output.skipped)
print(f"{len(results)} runs, {len(histories)} history rows, {len(skipped)} runs skipped")
