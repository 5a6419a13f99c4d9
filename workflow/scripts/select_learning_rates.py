"""Pick one learning rate per (task, method, optimizer, schedule) (rule select_learning_rates)."""

import sys

import pandas as pd

from hrta import grid as hgrid
from hrta import tuning
from hrta.aggregate import build_tables, write_parquet

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

grid = hgrid.load_grid(snakemake.input.grid, snakemake.params.name)
results, _, _ = build_tables([snakemake.input.plan], snakemake.input.manifests,
                             grid.name, grid.thresholds)
lr_grids = {label: grid.lr_grid(label) for label in grid["optimizers"]}
rows = tuning.select(results.to_dict("records"), grid["tuning"]["rule"], lr_grids,
                     grid["tuning"]["seeds"])
selection = pd.DataFrame(rows)
write_parquet(selection, snakemake.output.selection)
chosen = selection[selection["chosen"]]
print(f"{len(chosen)} learning rates chosen by {grid['tuning']['rule']} from "
      f"{len(selection)} candidates; {int(chosen['all_diverged'].sum())} cells diverged at "
      f"every learning rate, {int(chosen['chosen_at_grid_edge'].sum())} chose an end of the grid")
