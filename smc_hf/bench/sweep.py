"""Run the grid: each pending cell through the entry script, one subprocess at a time, resumable.

A cell is done when its result file reads back complete; everything else is (re)run. The entry script's
own output goes to the cell's `run.log`, so the terminal shows one progress bar.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from tqdm.auto import tqdm

from .grid import Cell
from .launch import Launcher
from .results import (
    RESULT_FILE,
    RUN_RESULTS_FILE,
    ResultError,
    build_result,
    read_result,
    read_run_results,
    write_json_atomic,
)

RUN_DIR = "run"
LOG_FILE = "run.log"
_LOG_TAIL_LINES = 15


@dataclass
class CellStatus:
    cell: Cell
    done: bool
    problem: Optional[str] = None  # why an existing result file is not counted


@dataclass
class SweepSummary:
    skipped: list[Cell] = field(default_factory=list)
    completed: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    redone: list[tuple[Cell, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def cell_dir(results_dir: str, cell: Cell) -> str:
    return os.path.join(results_dir, cell.relpath)


def cell_statuses(cells: Iterable[Cell], results_dir: str, model: Optional[str]) -> list[CellStatus]:
    """Which cells are done. A result from another model is an error: this sweep would mix two models."""
    statuses = []
    for cell in cells:
        path = os.path.join(cell_dir(results_dir, cell), RESULT_FILE)
        if not os.path.exists(path):
            statuses.append(CellStatus(cell, False))
            continue
        try:
            result = read_result(path, results_dir)
        except ResultError as err:
            statuses.append(CellStatus(cell, False, str(err)))
            continue
        if model is not None and result.model != model:
            raise ValueError(
                f"{path} was produced with model {result.model!r}, this sweep uses {model!r}; "
                "give another --output for another model"
            )
        statuses.append(CellStatus(cell, True))
    return statuses


def pending_cells(cells: Iterable[Cell], results_dir: str, model: Optional[str]) -> list[Cell]:
    return [s.cell for s in cell_statuses(cells, results_dir, model) if not s.done]


def has_checkpoint(run_dir: str) -> bool:
    """Whether a killed run left something `--resume_from_checkpoint` can continue from."""
    if not os.path.isdir(run_dir):
        return False
    for folder in [run_dir] + [os.path.join(run_dir, d) for d in os.listdir(run_dir) if d.startswith("round-")]:
        if os.path.isdir(folder) and any(d.startswith("checkpoint-") for d in os.listdir(folder)):
            return True
    return False


def run_sweep(cells: list[Cell], results_dir: str, launcher: Launcher, delete_run_dirs: bool = False,
              stop_on_error: bool = False, log: Optional[Callable[[str], None]] = None) -> SweepSummary:
    """Run every cell without a valid result; report (and set aside) malformed results and redo them.

    Messages go to `log` (default: stderr, above the progress bar).
    """
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    summary = SweepSummary()
    statuses = cell_statuses(cells, results_dir, launcher.model)
    todo = [s for s in statuses if not s.done]
    summary.skipped = [s.cell for s in statuses if s.done]
    runs = sum(s.cell.training_runs for s in todo)
    log(f"{len(cells)} cells: {len(summary.skipped)} done, {len(todo)} to run ({runs} fine-tunings)")
    for status in todo:
        if status.problem:
            log(f"redoing {status.cell}: {status.problem}")
            summary.redone.append((status.cell, status.problem))
            path = os.path.join(cell_dir(results_dir, status.cell), RESULT_FILE)
            os.replace(path, path + ".rejected")
    # Progress counts fine-tunings, so an LTH cell (1 + rounds of them) weighs what it costs.
    bar = tqdm(total=runs, desc="smc-bench", unit="fine-tuning", dynamic_ncols=True)
    for status in todo:
        cell = status.cell
        bar.set_postfix_str(str(cell))
        error = run_cell(cell, results_dir, launcher, delete_run_dirs)
        bar.update(cell.training_runs)
        if error is None:
            summary.completed.append(cell)
            continue
        summary.failed.append((cell, error))
        log(f"FAILED {cell}: {error}")
        if stop_on_error:
            break
    bar.close()
    return summary


def run_cell(cell: Cell, results_dir: str, launcher: Launcher, delete_run_dirs: bool = False) -> Optional[str]:
    """Run one cell and record its result; the error message if it failed, else None."""
    folder = cell_dir(results_dir, cell)
    run_dir = os.path.join(folder, RUN_DIR)
    os.makedirs(folder, exist_ok=True)
    run_results = os.path.join(run_dir, RUN_RESULTS_FILE)
    if os.path.exists(run_results):
        os.remove(run_results)  # left by an attempt killed before its result was recorded
    command = launcher.command(cell, run_dir, resume=has_checkpoint(run_dir))
    log_path = os.path.join(folder, LOG_FILE)
    start = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.monotonic() - start
    if code != 0:
        return f"exit code {code}; see {log_path}:\n{_tail(log_path)}"
    try:
        run = read_run_results(run_results, cell)
    except ResultError as err:
        return str(err)
    write_json_atomic(os.path.join(folder, RESULT_FILE), build_result(cell, launcher.model, run, command, wall))
    if delete_run_dirs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return None


def _tail(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()[-_LOG_TAIL_LINES:]
    return "".join("    " + line for line in lines).rstrip()
