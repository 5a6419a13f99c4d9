"""Write the evaluation plan with the selected learning rates (rule plan_eval)."""

import sys

import pandas as pd

from hrta import grid as hgrid
from hrta.aggregate import write_json

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

grid = hgrid.load_grid(snakemake.input.grid, snakemake.params.name)
selection = pd.read_parquet(snakemake.input.selection).to_dict("records")
runs = hgrid.eval_runs(grid, hgrid.selection_mapping(selection),
                       set(snakemake.params.backends))
write_json(hgrid.plan_document(grid, runs, snakemake.params.runs_per_job),
           snakemake.output.plan)
print(f"{len(runs)} evaluation runs planned")
