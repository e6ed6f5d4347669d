"""`smc-bench report`: from the result files of a sweep to the CSV, the Markdown tables and the figures."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from ..io.atomic import write_json
from .layer_table import write_layer_csv
from .plots import plot_all
from .results import CellResult, ResultError, scan_results
from .tables import aggregate, markdown, pool_folds, within_dense, write_csv

REPORT_DIR = "report"


@dataclass
class BenchReport:
    csv: str
    markdown: str
    json: str
    #: Per-module sparsity of every cell (`layer_table`).
    layers: str = ""
    figures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Cells counted in the tables but left out of `layers`, and why.
    layer_problems: list[str] = field(default_factory=list)
    cells: int = 0
    #: (task, method) -> largest sparsity within the tolerance of dense (None: not even the lowest).
    within_dense: dict[tuple[str, str], Optional[float]] = field(default_factory=dict)


def write_report(results_dir: str, out_dir: Optional[str] = None, tolerance: float = 1.0,
                 metric: Optional[str] = None) -> BenchReport:
    """Write summary.csv, summary.md, summary.json, layer_sparsity.csv and one PNG per task into `out_dir`
    (default results/report).

    `metric` reports another key of each run's metrics than the primary one (RACE: eval_high_accuracy).
    Files that cannot be counted are listed in the Markdown and in `problems`, never averaged in.
    """
    out_dir = out_dir or os.path.join(results_dir, REPORT_DIR if metric is None else f"{REPORT_DIR}-{metric}")
    results, problems = scan_results(results_dir)
    if metric is not None:
        results, problems = _rescore(results, metric, problems)
    os.makedirs(out_dir, exist_ok=True)
    layers = os.path.join(out_dir, "layer_sparsity.csv")
    layer_problems = write_layer_csv(results, layers)
    results, pool_problems = pool_folds(results)
    problems = problems + pool_problems
    groups = aggregate(results)
    report = BenchReport(os.path.join(out_dir, "summary.csv"), os.path.join(out_dir, "summary.md"),
                         os.path.join(out_dir, "summary.json"), layers, problems=problems,
                         layer_problems=layer_problems, cells=len(results))
    write_csv(groups, report.csv)
    heading = f"# SMC-Bench results: {len(results)} cells from `{results_dir}`"
    heading += f", scored by `{metric}`\n\n" if metric else "\n\n"
    with open(report.markdown, "w", encoding="utf-8") as handle:
        handle.write(heading + markdown(groups, tolerance, problems))
    within = report.within_dense = within_dense(groups, tolerance)
    write_json(report.json, {
        "results_dir": results_dir,
        "tolerance": tolerance,
        "groups": [{"task": g.task, "method": g.method, "legend": g.legend, "sparsity": g.sparsity,
                    "metric_name": g.metric_name, "n": g.n, "mean": g.mean, "std": g.std, "values": list(g.values),
                    "seeds": list(g.seeds), "achieved_sparsity": g.achieved_sparsity, "folds": list(g.folds)}
                   for g in groups],
        "max_sparsity_within_dense": [{"task": t, "method": m, "sparsity": s} for (t, m), s in within.items()],
        "problems": problems,
    }, indent=2)
    report.figures = plot_all(groups, out_dir)
    return report


def _rescore(results: list[CellResult], metric: str, problems: list[str]) -> tuple[list[CellResult], list[str]]:
    kept, problems = [], list(problems)
    for result in results:
        try:
            kept.append(result.with_metric(metric))
        except ResultError as err:
            problems.append(str(err))
    return kept, problems

