"""One figure per dataset in the layout of the paper's: metric vs sparsity, a line per method, dense flat.

As in the paper, the tested sparsities are evenly spaced on the x axis and labelled with their values
(they are 1 - 0.8^k, so a linear axis would crowd the high-sparsity end where methods part ways).
"""

from __future__ import annotations

import os
from typing import Iterable

from matplotlib.figure import Figure

from .grid import DENSE, format_sparsity
from .names import dataset_title, legend_name, method_style, metric_label
from .tables import GroupStats, dense_baseline, tasks_of


def plot_task(groups: Iterable[GroupStats], task: str, path: str) -> str:
    """Write the task's figure to `path` (PNG) and return the path."""
    rows = [g for g in groups if g.task == task]
    if not rows:
        raise ValueError(f"no results for task {task!r}")
    sparsities = sorted({g.sparsity for g in rows if g.method != DENSE})
    position = {s: i for i, s in enumerate(sparsities)}
    # A bare Figure draws on the Agg canvas when saved as PNG: no pyplot, no global backend switch, no GUI.
    fig = Figure(figsize=(8.0, 4.8), dpi=120)
    ax = fig.subplots()
    dense = dense_baseline(rows, task)
    if dense is not None:
        ax.axhline(dense.mean, color="black", linestyle="--", linewidth=1.6, label=legend_name(DENSE), zorder=1)
        if dense.std:
            ax.axhspan(dense.mean - dense.std, dense.mean + dense.std, color="black", alpha=0.08, zorder=0)
    methods = list(dict.fromkeys(g.method for g in rows if g.method != DENSE))
    for index, method in enumerate(methods):
        points = sorted((g for g in rows if g.method == method), key=lambda g: g.sparsity)
        xs = [position[g.sparsity] for g in points]
        ys = [g.mean for g in points]
        colour, marker = method_style(method, index)
        ax.plot(xs, ys, color=colour, marker=marker, markersize=6, linewidth=1.8, label=points[0].legend, zorder=3)
        if any(g.std for g in points):
            low = [g.mean - (g.std or 0.0) for g in points]
            high = [g.mean + (g.std or 0.0) for g in points]
            ax.fill_between(xs, low, high, color=colour, alpha=0.15, linewidth=0, zorder=2)
    ax.set_xticks(range(len(sparsities)))
    ax.set_xticklabels([format_sparsity(s) for s in sparsities], rotation=45 if len(sparsities) > 6 else 0)
    if len(sparsities) == 1:
        ax.set_xlim(-0.5, 0.5)
    ax.set_xlabel("Sparsity")
    ax.set_ylabel(metric_label(rows[0].metric_name))
    models = sorted({m for g in rows for m in g.models if m})
    title = dataset_title(task)
    if len(models) == 1:  # a Hub id as is, a local folder by its last two components
        title += f" — {'/'.join(models[0].rstrip('/').split('/')[-2:])}"
    ax.set_title(title, fontsize=13, fontweight="bold")
    ax.grid(True, color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    return path


def plot_all(groups: list[GroupStats], out_dir: str) -> list[str]:
    """One PNG per task in `out_dir`, named after the task."""
    os.makedirs(out_dir, exist_ok=True)
    return [plot_task(groups, task, os.path.join(out_dir, f"{task}.png")) for task in tasks_of(groups)]
