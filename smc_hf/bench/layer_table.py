"""Where each cell's zeros went: the per-module sparsity of every finished cell, as `layer_sparsity.csv`.

The summary tables give one overall sparsity per cell; two masks at the same overall sparsity can spread it very
differently (global magnitude against oBERT's Fisher scores), and the spread often explains the accuracy.
"""

from __future__ import annotations

import csv
from typing import Iterable

from .grid import format_sparsity
from .results import CellResult, ResultError

LAYER_COLUMNS = ("task", "method", "sparsity", "seed", "fold", "module", "numel", "zeros", "achieved")


def _count(value, path: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ResultError(f"{path}: {where} is {value!r}, not a count of weights")
    return value


def module_sparsity(result: CellResult) -> list[tuple[str, int, int]]:
    """(module, weights, zeros) of each selected module, as the cell's result file recorded them."""
    modules = result.modules
    if not modules:
        raise ResultError(f"{result.path}: records no per-module sparsity (sparsity.modules)")
    rows = []
    for name, entry in modules.items():
        if not isinstance(entry, dict):
            raise ResultError(f"{result.path}: sparsity.modules[{name!r}] is not an object")
        numel = _count(entry.get("numel"), result.path, f"sparsity.modules[{name!r}].numel")
        zeros = _count(entry.get("zeros"), result.path, f"sparsity.modules[{name!r}].zeros")
        if numel == 0 or zeros > numel:
            raise ResultError(f"{result.path}: sparsity.modules[{name!r}] has {zeros} zeros in {numel} weights")
        rows.append((name, numel, zeros))
    return rows


def write_layer_csv(results: Iterable[CellResult], path: str) -> list[str]:
    """One row per (cell, module), folds kept apart; returns a message for each cell left out and why."""
    problems = []
    ordered = sorted(results, key=lambda r: (r.task, r.method, r.sparsity, r.seed, -1 if r.fold is None else r.fold))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LAYER_COLUMNS)
        for result in ordered:
            try:
                modules = module_sparsity(result)
            except ResultError as err:
                problems.append(f"{err} (left out of {path})")
                continue
            for name, numel, zeros in modules:
                writer.writerow([result.task, result.method, format_sparsity(result.sparsity), result.seed,
                                 "" if result.fold is None else result.fold, name, numel, zeros,
                                 f"{zeros / numel:.6f}"])
    return problems
