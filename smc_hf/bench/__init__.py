"""SMC-Bench sweeps: the grid of tasks x methods x sparsities x seeds, its result files, tables and figures.

    smc-bench run --tasks csqa --methods omp_after,gmp,rigl:snip --sparsities paper --seeds 1,2,3 \
        --model roberta-large --output results/
    smc-bench report results/
    smc-bench copy-results results/ archive/   # the result files alone, to carry a sweep to another machine
"""

from .grid import (
    CV_FOLDS,
    PAPER_SPARSITIES,
    Cell,
    MethodSpec,
    build_grid,
    parse_folds,
    parse_methods,
    parse_seeds,
    parse_sparsities,
)
from .archive import CopySummary, copy_results
from .launch import Launcher, default_entry
from .plan import Unit, build_plan
from .report import BenchReport, write_report
from .results import RESULT_FILE, CellResult, ResultError, read_result, scan_results
from .sweep import SweepSummary, pending_cells, run_sweep
from .tables import GroupStats, aggregate, markdown, pool_folds, within_dense

__all__ = [
    "CV_FOLDS",
    "Unit",
    "build_plan",
    "parse_folds",
    "pool_folds",
    "PAPER_SPARSITIES",
    "RESULT_FILE",
    "BenchReport",
    "Cell",
    "CellResult",
    "CopySummary",
    "GroupStats",
    "Launcher",
    "MethodSpec",
    "ResultError",
    "SweepSummary",
    "aggregate",
    "build_grid",
    "copy_results",
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
