"""Merge the per-backend NTK tables and every theory check (rule theory_collect)."""

import json
import sys
from pathlib import Path

import pandas as pd

from hrta.aggregate import write_json, write_parquet

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

tables = [pd.read_parquet(path) for path in snakemake.input.tables]
table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
    columns=["task", "backend", "s", "dtype", "width", "seed", "rel_error"])
write_parquet(table, snakemake.output.table)
width = {Path(path).stem: json.loads(Path(path).read_text())
         for path in snakemake.input.checks}
write_json({"s_squared": json.loads(Path(snakemake.input.spectrum).read_text()),
            "width": width}, snakemake.output.checks)
print(f"{len(table)} empirical-NTK rows from {len(tables)} backends")
