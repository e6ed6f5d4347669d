"""SMC-Bench sweeps: the grid of tasks x methods x sparsities x seeds, its result files, tables and figures.

    smc-bench run --tasks csqa --methods omp_after,gmp,rigl:snip --sparsities paper --seeds 1,2,3 \
        --model roberta-large --output results/
    smc-bench report results/
"""

from .grid import PAPER_SPARSITIES, Cell, MethodSpec, build_grid, parse_methods, parse_seeds, parse_sparsities
from .launch import Launcher, default_entry
from .report import BenchReport, write_report
from .results import RESULT_FILE, CellResult, ResultError, read_result, scan_results
from .sweep import SweepSummary, pending_cells, run_sweep
from .tables import GroupStats, aggregate, markdown, within_dense

__all__ = [
    "PAPER_SPARSITIES",
    "RESULT_FILE",
    "BenchReport",
    "Cell",
    "CellResult",
    "GroupStats",
    "Launcher",
    "MethodSpec",
    "ResultError",
    "SweepSummary",
    "aggregate",
    "build_grid",
    "default_entry",
    "markdown",
    "parse_methods",
    "parse_seeds",
    "parse_sparsities",
    "pending_cells",
    "read_result",
    "run_sweep",
    "scan_results",
    "within_dense",
    "write_report",
]
