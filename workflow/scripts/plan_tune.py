"""Write the tuning plan and the resolved grid (rule plan_tune)."""

import sys

from hrta import grid as hgrid
from hrta.atomic import write_json

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

grid = hgrid.load_grid(snakemake.input.grid, snakemake.params.name)
runs = hgrid.tune_runs(grid)
write_json(hgrid.plan_document(grid, runs, snakemake.params.runs_per_job),
           snakemake.output.plan)
write_json({**grid.resolved(), "backends": snakemake.params.backends,
            "missing_backends": snakemake.params.missing},
           snakemake.output.grid)
print(f"{len(runs)} tuning runs planned")
