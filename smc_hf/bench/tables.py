"""Result tables: mean ± std over seeds per (task, method, sparsity), as CSV and as Markdown.

Cross-validation folds are pooled first, as the paper scores MAWPS and ASDiv-A: per seed, the sum of
correct dev answers over all folds divided by the sum of dev examples (not the mean of fold accuracies).

Also the benchmark's headline number per method: the largest sparsity up to which it stays within a
tolerance (1 point by default) of the dense model.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass, replace
from typing import Iterable, Optional

from .grid import DENSE, MethodSpec, format_sparsity
from .names import dataset_title, legend_rank, metric_label
from .results import CellResult, ResultError

#: Achieved sparsity further than this from the target is pointed out under the table.
SPARSITY_TOLERANCE = 0.005

CSV_COLUMNS = ["task", "method", "legend", "sparsity", "metric_name", "n", "mean", "std", "min", "max",
               "achieved_sparsity", "seeds", "values"]


@dataclass(frozen=True)
class GroupStats:
    """One point of a curve: a method at a sparsity, over its seeds."""

    task: str
    method: str
    sparsity: float
    metric_name: str
    values: tuple[float, ...]
    seeds: tuple[int, ...]
    achieved_sparsity: float
    models: tuple[str, ...]
    #: The cross-validation folds pooled into each value (empty: the task has none).
    folds: tuple[int, ...] = ()

    @property
    def legend(self) -> str:
        return MethodSpec.parse(self.method).legend

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation over seeds; None for a single seed."""
        return statistics.stdev(self.values) if self.n > 1 else None

    def cell_text(self, n_expected: int) -> str:
        text = f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"
        return text if self.n == n_expected else f"{text} (n={self.n})"


def pool_folds(results: Iterable[CellResult]) -> tuple[list[CellResult], list[str]]:
    """One result per (task, method, sparsity, seed): fold results pooled by their counts of correct and
    evaluated examples (`results.COUNT_KEYS`), 100 * sum(correct) / sum(examples) for a metric in percent.

    A group whose folds lack the counts, or whose metric is not their ratio, cannot be pooled: it is left out
    and named in the problems, never averaged instead.
    """
    plain, by_seed = [], {}
    for result in results:
        if result.fold is None:
            plain.append(result)
        else:
            key = (result.task, result.method, round(result.sparsity, 6), result.seed)
            by_seed.setdefault(key, []).append(result)
    pooled, problems = list(plain), []
    for (task, method, sparsity, seed), folds in by_seed.items():
        folds.sort(key=lambda r: r.fold)
        try:
            pooled.append(_pool(folds))
        except ResultError as err:
            problems.append(f"{task} {method} s={format_sparsity(sparsity)} seed={seed}: folds not pooled: {err}")
    return pooled, problems


def _pool(folds: list[CellResult]) -> CellResult:
    correct = total = 0
    scale = None
    for result in folds:
        counts = result.counts()
        if counts is None:
            raise ResultError(f"{result.path} records no {' / '.join(result.count_keys())} in its metrics")
        c, n = counts
        fold_scale = next((k for k in (100.0, 1.0) if math.isclose(result.metric, k * c / n, abs_tol=1e-6 * k)), None)
        if fold_scale is None or (scale is not None and fold_scale != scale):
            raise ResultError(f"{result.path}: {result.metric_name} = {result.metric} is not {c} / {n} correct")
        scale = fold_scale
        correct, total = correct + c, total + n
    first = folds[0]
    return replace(first, metric=scale * correct / total, fold=None,
                   achieved_sparsity=statistics.fmean(r.achieved_sparsity for r in folds),
                   wall_time_s=sum(r.wall_time_s for r in folds), path=os.path.dirname(first.path),
                   metrics={**dict(zip(first.count_keys(), (correct, total))), "folds": [r.fold for r in folds]})


def aggregate(results: Iterable[CellResult]) -> list[GroupStats]:
    """Group cell results over seeds (folds pooled first), sorted by task, the paper's legend order and sparsity.

    Folds that cannot be pooled are an error here; `write_report` lists them instead (`pool_folds`)."""
    results, problems = pool_folds(results)
    if problems:
        raise ValueError("; ".join(problems))
    groups: dict[tuple[str, str, float], list[CellResult]] = {}
    metric_names: dict[str, tuple[str, str]] = {}
    for result in results:
        seen = metric_names.setdefault(result.task, (result.metric_name, result.path))
        if seen[0] != result.metric_name:
            raise ValueError(f"task {result.task!r} mixes metrics: {seen[0]!r} in {seen[1]}, "
                             f"{result.metric_name!r} in {result.path}")
        groups.setdefault((result.task, result.method, round(result.sparsity, 6)), []).append(result)
    stats = []
    for (task, method, sparsity), members in groups.items():
        members.sort(key=lambda r: r.seed)
        stats.append(GroupStats(
            task, method, sparsity, members[0].metric_name,
            tuple(r.metric for r in members), tuple(r.seed for r in members),
            statistics.fmean(r.achieved_sparsity for r in members), tuple(sorted({r.model for r in members})),
            tuple(sorted({f for r in members for f in r.metrics.get("folds", ()) if isinstance(f, int)})),
        ))
    stats.sort(key=lambda g: (g.task, legend_rank(g.method), g.sparsity))
    return stats


def tasks_of(groups: Iterable[GroupStats]) -> list[str]:
    return list(dict.fromkeys(g.task for g in groups))


def dense_baseline(groups: Iterable[GroupStats], task: str) -> Optional[GroupStats]:
    return next((g for g in groups if g.task == task and g.method == DENSE), None)


def within_dense(groups: list[GroupStats], tolerance: float = 1.0) -> dict[tuple[str, str], Optional[float]]:
    """(task, method) -> the largest sparsity up to which every tested sparsity is within `tolerance` of dense.

    None when the method is already further away at its lowest sparsity; tasks without a dense run are left out.
    """
    out: dict[tuple[str, str], Optional[float]] = {}
    for task in tasks_of(groups):
        dense = dense_baseline(groups, task)
        if dense is None:
            continue
        for method in dict.fromkeys(g.method for g in groups if g.task == task and g.method != DENSE):
            best = None
            for group in sorted((g for g in groups if g.task == task and g.method == method), key=lambda g: g.sparsity):
                if group.mean < dense.mean - tolerance:
                    break
                best = group.sparsity
            out[(task, method)] = best
    return out


def write_csv(groups: Iterable[GroupStats], path: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for g in groups:
            writer.writerow([
                g.task, g.method, g.legend, format_sparsity(g.sparsity), g.metric_name, g.n, repr(g.mean),
                "" if g.std is None else repr(g.std), repr(min(g.values)), repr(max(g.values)),
                repr(g.achieved_sparsity), " ".join(map(str, g.seeds)), " ".join(map(repr, g.values)),
            ])


def within_markdown(groups: list[GroupStats], within: dict[tuple[str, str], Optional[float]],
                    tolerance: float) -> list[str]:
    """Methods (rows) x tasks (columns): the largest sparsity each method keeps within `tolerance` of dense."""
    tasks = [t for t in tasks_of(groups) if any(key[0] == t for key in within)]
    methods = sorted({m for _, m in within}, key=legend_rank)
    lines = [f"## Largest sparsity within {tolerance:g} point(s) of dense", "",
             "Every tested sparsity up to it is within the tolerance; `none`: not even the lowest.", "",
             "| method | " + " | ".join(dataset_title(t) for t in tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for method in methods:
        cells = []
        for task in tasks:
            if (task, method) not in within:
                cells.append("")
            else:
                best = within[(task, method)]
                cells.append("none" if best is None else format_sparsity(best))
        lines.append(f"| {MethodSpec.parse(method).legend} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(groups: list[GroupStats], tolerance: float = 1.0, problems: Iterable[str] = ()) -> str:
    """One table per task: methods (rows) x sparsity (columns), the dense row, and the within-dense column."""
    within = within_dense(groups, tolerance)
    lines: list[str] = []
    for task in tasks_of(groups):
        rows = [g for g in groups if g.task == task]
        sparsities = sorted({g.sparsity for g in rows if g.method != DENSE})
        n_expected = max(g.n for g in rows)
        models = sorted({m for g in rows for m in g.models})
        dense = dense_baseline(groups, task)
        lines += [f"## {dataset_title(task)} (`{task}`)", ""]
        spread = f"mean ± sample std over {n_expected} seeds" if n_expected > 1 else "one seed"
        fold_sets = {g.folds for g in rows if g.folds}
        if fold_sets:
            spread += "; folds " + " / ".join(",".join(map(str, f)) for f in sorted(fold_sets)) + \
                " pooled (correct / examples over all folds)"
        lines += [f"{metric_label(rows[0].metric_name)}, {spread} per cell; "
                  f"model: {', '.join(f'`{m}`' for m in models) or 'the task default'}.", ""]
        header = ["method", DENSE] + [format_sparsity(s) for s in sparsities]
        header.append(f"max sparsity within {tolerance:g} pt of dense")
        lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for method in dict.fromkeys(g.method for g in rows):
            by_sparsity = {g.sparsity: g for g in rows if g.method == method}
            legend = next(iter(by_sparsity.values())).legend
            if method == DENSE:
                cells = [by_sparsity[0.0].cell_text(n_expected)] + [""] * len(sparsities) + [""]
            else:
                cells = [""] + [by_sparsity[s].cell_text(n_expected) if s in by_sparsity else "" for s in sparsities]
                if dense is None:
                    cells.append("no dense run")
                else:
                    best = within.get((task, method))
                    cells.append("none" if best is None else format_sparsity(best))
            lines.append("| " + " | ".join([legend] + cells) + " |")
        off = [g for g in rows if g.method != DENSE and abs(g.achieved_sparsity - g.sparsity) > SPARSITY_TOLERANCE]
        if off:
            lines += ["", "Achieved sparsity differs from the target: " + "; ".join(
                f"{g.legend} at {format_sparsity(g.sparsity)}: {g.achieved_sparsity:.4f}" for g in off) + "."]
        lines.append("")
    if within:
        lines += within_markdown(groups, within, tolerance)
    problems = list(problems)
    if problems:
        lines += ["## Result files not counted", ""] + [f"- {p}" for p in problems] + [""]
    if not lines:
        lines = ["No results yet.", ""]
    return "\n".join(lines)
