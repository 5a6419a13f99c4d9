"""Read a pipeline's results folder (``<results>/<grid>/``) into one :class:`Bundle`, check that
the tables have the columns the report uses, and derive the report id.

The report uses only these files (written by the pipeline, see README "The pipeline"):

=================================  ===========================================================
``plan/grid.json``                 the resolved grid (config): methods, seeds, thresholds, ...
``results.parquet``                one row per run (tuning and evaluation, every backend)
``histories.parquet``              every logged step of every run
``selection.parquet``              the fair-tuning selection (one row per candidate lr)
``agreement.parquet`` / ``.json``  every non-reference evaluation run against the reference
``theory/ntk_spectrum.parquet``    closed-form NTK spectrum per (task, s)     (if theory ran)
``theory/ntk_width.parquet``       empirical vs closed-form NTK per width     (if theory ran)
``theory/rates.parquet``           predicted vs measured GD rates per stage   (if theory ran)
``theory/checks.json``             the verdicts of the s^2 and width checks   (if theory ran)
``skipped.json``                   backends and runs the pipeline could not run
=================================  ===========================================================
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REQUIRED = {
    "results": ("run_id", "grid", "phase", "backend", "task", "method", "family", "optimizer",
                "optimizer_label", "schedule", "lr", "width", "n_train", "seed", "dtype",
                "steps", "train_loss", "initial_train_loss", "test_mse", "test_rel_l2",
                "diverged", "train_seconds", "compile_seconds", "wall_seconds", "spec_version",
                "suite_version", "git_commit", "versions", "spec_digest"),
    "histories": ("run_id", "step", "s", "lr", "train_loss"),
    "selection": ("task", "method", "optimizer_label", "schedule", "family", "lr", "score",
                  "chosen", "lr_grid", "rule", "rule_text"),
    "agreement": ("run_id", "backend", "dtype", "task", "method", "max_rel_loss",
                  "max_abs_loss", "max_rel_params", "first_exceed_step", "loss_rtol",
                  "loss_atol", "params_rtol", "tolerance", "passed"),
    "spectrum": ("task", "s", "lambda_min", "lambda_max", "condition"),
    "ntk_width": ("task", "backend", "s", "dtype", "width", "seed", "rel_error"),
    "rates": ("run_id", "backend", "task", "method", "width", "seed", "stage", "s", "lr",
              "kappa_predicted", "kappa_measured", "kappa_ratio"),
}

FILES = {
    "grid": "plan/grid.json",
    "results": "results.parquet",
    "histories": "histories.parquet",
    "selection": "selection.parquet",
    "agreement": "agreement.parquet",
    "agreement_summary": "agreement.json",
    "spectrum": "theory/ntk_spectrum.parquet",
    "ntk_width": "theory/ntk_width.parquet",
    "rates": "theory/rates.parquet",
    "theory_checks": "theory/checks.json",
    "skipped": "skipped.json",
}
OPTIONAL = ("agreement", "agreement_summary", "spectrum", "ntk_width", "rates",
            "theory_checks", "skipped")
PERF_FILES = ("perf.json", "scaling.png")
"""Written by ``python -m benchmarks.perf`` into ``<results>/../perf/``; shown when present."""


class ReportInputError(ValueError):
    """A results folder the report cannot be built from (one line naming the file or column)."""


@dataclass
class Bundle:
    """Everything the report reads. ``grid`` is the resolved grid document (``plan/grid.json``:
    keys name, digest, grid, methods, lr_grids, ...); tables are pandas DataFrames, absent
    optional ones None; ``paths`` maps each present input's key to its file."""

    root: Path
    grid_doc: dict
    results: pd.DataFrame
    histories: pd.DataFrame
    selection: pd.DataFrame
    agreement: pd.DataFrame | None
    agreement_summary: dict | None
    spectrum: pd.DataFrame | None
    ntk_width: pd.DataFrame | None
    rates: pd.DataFrame | None
    theory_checks: dict | None
    skipped: dict | None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def grid(self) -> dict:
        """The grid document with defaults filled in (``plan/grid.json``'s ``grid``)."""
        return self.grid_doc["grid"]

    @property
    def name(self) -> str:
        return str(self.grid_doc.get("name") or self.results["grid"].iloc[0])

    @property
    def thresholds(self) -> list[float]:
        return [float(t) for t in self.grid["thresholds"]]

    @property
    def eval_backend(self) -> str:
        return self.grid["evaluation"]["backend"]

    @property
    def dtype(self) -> str:
        return self.grid["dtype"]

    @property
    def width(self) -> int:
        return int(self.grid["width"])

    @property
    def steps(self) -> int:
        return int(self.grid["steps"])

    @property
    def tasks(self) -> list[str]:
        return list(self.grid["tasks"])


def _check_columns(frame: pd.DataFrame, key: str, path: Path) -> None:
    missing = [c for c in REQUIRED[key] if c not in frame.columns]
    if missing:
        raise ReportInputError(f"{path}: expected columns {', '.join(missing)} (a table written "
                               f"by the pipeline's {key} stage)")


def load_bundle(results_dir: Path | str) -> Bundle:
    """Read a results folder; raise :class:`ReportInputError` when a required file or column is
    missing or the results table holds no evaluation run."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ReportInputError(f"RESULTS_DIR: expected a pipeline results folder "
                               f"(e.g. results/smoke), got {str(root)!r}")
    values: dict = {}
    paths: dict[str, Path] = {}
    for key, rel in FILES.items():
        path = root / rel
        if not path.is_file():
            if key in OPTIONAL:
                values[key] = None
                continue
            raise ReportInputError(f"{path}: expected this file (run the pipeline first, e.g. "
                                   f"snakemake -c2 --config grid=smoke)")
        paths[key] = path
        if path.suffix == ".json":
            try:
                values[key] = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ReportInputError(f"{path}: expected JSON ({err})") from None
        else:
            values[key] = pd.read_parquet(path)
            if key in REQUIRED:
                _check_columns(values[key], key, path)
    if "grid" not in values["grid"] or "thresholds" not in values["grid"]["grid"]:
        raise ReportInputError(f"{paths['grid']}: expected the resolved grid (keys grid, "
                               f"methods) written by the plan stage")
    if not (values["results"]["phase"] == "eval").any():
        raise ReportInputError(f"{paths['results']}: expected at least one evaluation run "
                               f"(phase == 'eval')")
    return Bundle(root=root, grid_doc=values["grid"], results=values["results"],
                  histories=values["histories"], selection=values["selection"],
                  agreement=values["agreement"], agreement_summary=values["agreement_summary"],
                  spectrum=values["spectrum"], ntk_width=values["ntk_width"],
                  rates=values["rates"], theory_checks=values["theory_checks"],
                  skipped=values["skipped"], paths=paths)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_digests(bundle: Bundle) -> dict[str, str]:
    """{path relative to the results folder: sha256} of every file the report read, including
    the performance harness's ``../perf/perf.json`` and ``../perf/scaling.png`` when they exist
    (the report then shows them, so they are part of what its id stands for)."""
    digests = {str(path.relative_to(bundle.root)): file_digest(path)
               for _, path in sorted(bundle.paths.items())}
    perf = Path(bundle.root).parent / "perf"
    for name in PERF_FILES:
        if (perf / name).is_file():
            digests[f"../perf/{name}"] = file_digest(perf / name)
    return digests


def report_id(bundle: Bundle, code: dict) -> str:
    """``<grid>-<12 hex>``: the grid's name and a sha256 over the digests of every input file
    (the results tables and the resolved grid, i.e. the config) and the code version ``code``
    (suite version, git commit and whether the tree was dirty). The same inputs and code give
    the same id; any changed number, config or commit gives another."""
    payload = json.dumps({"inputs": input_digests(bundle),
                          "code": {k: code.get(k) for k in ("suite_version", "commit",
                                                            "dirty")}},
                         sort_keys=True, separators=(",", ":"))
    return f"{bundle.name}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
