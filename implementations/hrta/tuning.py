"""Fair tuning: pick one learning rate per (task, method, optimizer label, schedule).

Every cell tries the same number of log-spaced learning rates (``tuning.lr_count`` from its
optimizer's range, the same range for HRTA and the baselines) on the same tuning seeds, on one
backend. The rule, stated in the grid (``tuning.rule``) and recorded with the selection:

* each candidate's *score* over its tuning seeds, lower is better:
  ``median_final_train_loss`` the median final training loss, or
  ``mean_log_final_train_loss`` the mean of log10(final training loss);
  a diverged run (or a non-finite final loss) scores +inf;
* candidates rank by (any tuning run diverged, number diverged, score, learning rate): a
  candidate with a diverged run always ranks after every candidate without one, and ties go to
  the smaller learning rate;
* the first in rank is chosen, and is then rerun on the separate evaluation seeds.

The selection is data: one row per candidate with its score and rank, the cell's whole
learning-rate grid, and which one was chosen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

import numpy as np

RULES = ("median_final_train_loss", "mean_log_final_train_loss")
CELL = ("task", "method", "optimizer_label", "schedule")
RULE_TEXT = ("score = {rule} over the tuning seeds (a diverged run counts as +inf); rank by "
             "(any run diverged, runs diverged, score, lr); the first is chosen")


class TuningError(ValueError):
    """Tuning results that cannot support a selection (missing runs, unknown rule)."""


def _final_loss(row: Mapping) -> float:
    loss = row.get("train_loss")
    if row.get("diverged") or loss is None:
        return math.inf
    loss = float(loss)
    return loss if math.isfinite(loss) else math.inf


def score(losses: list[float], rule: str) -> float:
    """The rule's score of one candidate from its final losses (inf for a diverged run)."""
    if rule not in RULES:
        raise TuningError(f"tuning.rule: expected one of {', '.join(RULES)}, got {rule!r}")
    values = np.asarray(losses, dtype=np.float64)
    if rule == "median_final_train_loss":
        return float(np.median(values))
    with np.errstate(divide="ignore"):
        return float(np.mean(np.log10(np.maximum(values, 0.0))))


def select(rows: Iterable[Mapping], rule: str, lr_grids: Mapping[str, list[float]],
           seeds: list[int]) -> list[dict]:
    """Selection rows from tuning-run rows.

    ``rows``: one per tuning run with task, method, family, optimizer_label, schedule, lr,
    lr_index, seed, train_loss, diverged. ``lr_grids``: optimizer label -> the learning rates
    every cell of that label must have tried; ``seeds``: the tuning seeds each candidate must
    have run on. Raises TuningError when a run is missing.
    """
    candidates: dict[tuple, dict] = {}
    for row in rows:
        key = (*(row[c] for c in CELL), int(row["lr_index"]))
        entry = candidates.setdefault(key, {"row": row, "seeds": {}})
        entry["seeds"][int(row["seed"])] = _final_loss(row)
    cells: dict[tuple, list[tuple[int, dict]]] = {}
    for key, entry in candidates.items():
        cells.setdefault(key[:4], []).append((key[4], entry))
    out = []
    for cell in sorted(cells):
        label = cell[2]
        grid = lr_grids[label]
        found = {i for i, _ in cells[cell]}
        if found != set(range(len(grid))):
            missing = sorted(set(range(len(grid))) - found)
            raise TuningError(f"tuning runs of {dict(zip(CELL, cell, strict=True))}: missing "
                              f"learning rates {[grid[i] for i in missing]}")
        ranked = []
        for i, entry in sorted(cells[cell], key=lambda t: t[0]):
            absent = sorted(set(seeds) - set(entry["seeds"]))
            if absent:
                raise TuningError(f"tuning runs of {dict(zip(CELL, cell, strict=True))} at lr "
                                  f"{grid[i]:g}: missing seeds {absent}")
            losses = [entry["seeds"][s] for s in seeds]
            n_div = sum(1 for v in losses if not math.isfinite(v))
            ranked.append({"lr_index": i, "lr": float(grid[i]), "score": score(losses, rule),
                           "n_diverged": n_div, "family": entry["row"].get("family")})
        ranked.sort(key=lambda c: (c["n_diverged"] > 0, c["n_diverged"], c["score"], c["lr"]))
        chosen_lr = ranked[0]["lr"]
        for rank, cand in enumerate(ranked, start=1):
            out.append({**dict(zip(CELL, cell, strict=True)), "family": cand["family"],
                        "lr": cand["lr"], "lr_index": cand["lr_index"],
                        "score": cand["score"], "n_seeds": len(seeds),
                        "n_diverged": cand["n_diverged"], "rank": rank, "chosen": rank == 1,
                        "selected_lr": chosen_lr, "all_diverged": ranked[0]["n_diverged"] > 0,
                        "chosen_at_grid_edge": ranked[0]["lr_index"] in (0, len(grid) - 1),
                        "lr_grid": json.dumps(grid), "rule": rule,
                        "rule_text": RULE_TEXT.format(rule=rule)})
    return out
