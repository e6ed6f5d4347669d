"""Run the plan (`plan.py`): each pending run through the entry script, resumable, one at a time by default.

A cell is done when its result file reads back complete; every run with a pending cell is (re)run, and a
killed run resumes from its checkpoint or its last finished round. The entry script's output goes to the
run's `run.log`, so the terminal shows one progress bar (counting fine-tunings).

Threads: by default runs go one after another and each uses the threads torch picks (all cores, or what
OMP_NUM_THREADS says). With `jobs` > 1, up to `jobs` runs go at once and each gets its own 1/jobs of the
cores: OMP_NUM_THREADS and MKL_NUM_THREADS (torch's thread count follows them) and, where the OS allows,
its CPU affinity, so two multi-threaded torch processes never spin on the same cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from tqdm.auto import tqdm

from ..io.atomic import write_json
from .grid import Cell
from .launch import Launcher, child_preexec, children_end_with_us, stop_children
from .lock import LockHeld, acquire_lock, release_lock
from .plan import ROUND_DONE_FILE, RUN_DIR, Unit, build_plan
from .results import (
    RESULT_FILE,
    RUN_RESULTS_FILE,
    ResultError,
    begin_attempt,
    build_result,
    end_attempt,
    reported_runtime,
    read_result,
    read_run_results,
)

LOG_FILE = "run.log"
_LOG_TAIL_LINES = 15
_POLL_S = 0.2

__all__ = ["RUN_DIR", "CellStatus", "SweepSummary", "cell_dir", "cell_statuses", "pending_cells", "pending_units",
           "run_sweep", "thread_slots"]


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
    #: The runs started, in order (each a fine-tuning process of one or more rounds).
    runs: list[Unit] = field(default_factory=list)

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


def pending_units(plan: list[Unit], done: set, results_dir: str) -> list[Unit]:
    """The runs that still have work: a cell to record, or a dense model a pending run starts from."""
    pending = [u for u in plan if any(c.key not in done for c, _ in u.records)]
    for unit in list(pending):
        source = unit.source
        if source is not None and source not in pending and not source.dense_ready(results_dir):
            pending.append(source)
    return [u for u in plan if u in pending]


def has_checkpoint(run_dir: str) -> bool:
    """Whether a killed run left something `--resume_from_checkpoint` can continue from: a checkpoint, or a
    finished round of a multi-round run."""
    if not os.path.isdir(run_dir):
        return False
    rounds = [os.path.join(run_dir, d) for d in os.listdir(run_dir) if d.startswith("round-")]
    if any(os.path.isfile(os.path.join(r, ROUND_DONE_FILE)) for r in rounds):
        return True
    for folder in [run_dir] + rounds:
        if os.path.isdir(folder) and any(d.startswith("checkpoint-") for d in os.listdir(folder)):
            return True
    return False


def thread_slots(jobs: int, cores: Optional[list[int]] = None) -> list[Optional[list[int]]]:
    """The cores of each of `jobs` concurrent runs (None for jobs == 1: the run keeps the process's)."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if jobs == 1:
        return [None]
    if cores is None:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if jobs > len(cores):
        raise ValueError(f"--jobs {jobs} is more than the {len(cores)} cores available: two torch processes would "
                         f"share cores and spin (measured 20-30x slower); use --jobs {len(cores)} or fewer")
    per = len(cores) // jobs
    return [cores[i * per:(i + 1) * per] for i in range(jobs)]


def slot_env(slot: Optional[list[int]]) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if slot is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(len(slot))
        env["SMC_BENCH_CORES"] = ",".join(map(str, slot))
    return env


def _pin(slot: Optional[list[int]]):
    if slot is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, slot)


@dataclass
class _Running:
    unit: Unit
    process: subprocess.Popen
    log: object
    log_path: str
    command: list[str]
    start: float
    slot: int
    lock_fd: Optional[int] = None
    attempts: list = field(default_factory=list)


class _Sweep:
    def __init__(self, cells, results_dir, launcher, delete_run_dirs, stop_on_error, log, jobs):
        self.results_dir, self.launcher = results_dir, launcher
        self.delete_run_dirs, self.stop_on_error, self.log = delete_run_dirs, stop_on_error, log
        self.slots = thread_slots(jobs)
        self.cells = cells
        self.summary = SweepSummary()
        self.done: set = set()
        self.finished: set[int] = set()  # ids of units that ended (ok or not)
        self.failed_units: set[int] = set()
        self.wanted: set[Cell] = set(cells)
        self.todo: list[Unit] = []
        self.left: dict[int, int] = {}  # fine-tunings each pending run has left, by id(unit)
        self.running: list[_Running] = []
        self.attempts: dict[int, list] = {}  # id(unit) -> its attempts (see results.begin_attempt)

    # -- recording ------------------------------------------------------------------------------------
    def _model(self, unit: Unit, run: dict) -> Optional[str]:
        if self.launcher.model or unit.source is None:
            return self.launcher.model
        try:
            with open(os.path.join(unit.source.dense_dir(self.results_dir), RUN_RESULTS_FILE), encoding="utf-8") as f:
                return str(json.load(f).get("model_name_or_path") or "") or None
        except (OSError, ValueError):
            return None

    def _round_ready(self, unit: Unit, round_idx: Optional[int]) -> bool:
        folder = unit.round_dir(self.results_dir, round_idx)
        if not os.path.isfile(os.path.join(folder, RUN_RESULTS_FILE)):
            return False
        return round_idx is None or round_idx == unit.rounds - 1 or os.path.isfile(os.path.join(folder, ROUND_DONE_FILE))

    def record(self, unit: Unit, command: list[str], wall: float, final: bool) -> Optional[str]:
        """Record every cell of `unit` whose round has finished; the first error, if any."""
        error = None
        for cell, round_idx in unit.records:
            if cell.key in self.done:
                continue
            if round_idx is not None and not final and not self._round_ready(unit, round_idx):
                continue
            if round_idx is None and not final:
                continue
            path = os.path.join(unit.round_dir(self.results_dir, round_idx), RUN_RESULTS_FILE)
            try:
                run = read_run_results(path, cell, ran=unit.cell, round_idx=round_idx)
            except ResultError as err:
                error = error or str(err)
                continue
            shared, attempts = None, None
            if unit.kind == "chain":
                shared = {"run": unit.run_relpath, "round": round_idx if round_idx is not None else unit.rounds - 1}
                wall_s = float(run.get("train_runtime") or 0.0)
            else:
                wall_s = wall
                attempts = self.attempts.get(id(unit))
                if unit.source is not None:
                    shared = {"dense_run": os.path.relpath(unit.source.dense_dir(self.results_dir), self.results_dir)}
            os.makedirs(cell_dir(self.results_dir, cell), exist_ok=True)
            write_json(os.path.join(cell_dir(self.results_dir, cell), RESULT_FILE),
                       build_result(cell, self._model(unit, run), run, command, wall_s, shared, attempts), indent=2)
            self.done.add(cell.key)
            if cell in self.wanted:
                self.summary.completed.append(cell)
        return error

    # -- running --------------------------------------------------------------------------------------
    def start(self, unit: Unit, slot: int) -> _Running:
        """Start `unit`'s process, its folder locked against a second smc-bench (`LockHeld` if it is)."""
        folder = cell_dir(self.results_dir, unit.cell)
        run_dir = os.path.join(self.results_dir, unit.run_relpath)
        lock_fd = acquire_lock(folder, f"run {unit.run_relpath}")
        try:
            return self._start_locked(unit, slot, folder, run_dir, lock_fd)
        except BaseException:
            release_lock(lock_fd)
            raise

    def _start_locked(self, unit: Unit, slot: int, folder: str, run_dir: str, lock_fd) -> _Running:
        stale = os.path.join(run_dir, RUN_RESULTS_FILE)
        if os.path.exists(stale):
            os.remove(stale)  # left by an attempt killed before its result was recorded
        source = unit.source.dense_dir(self.results_dir) if unit.source is not None else None
        command = self.launcher.command(unit.cell, run_dir, resume=has_checkpoint(run_dir), source=source)
        if unit.kind == "chain":  # rounds finished by a killed attempt are recorded before it goes on
            self.record(unit, command, 0.0, final=False)
        log_path = os.path.join(folder, LOG_FILE)
        attempts = begin_attempt(folder, log_path)
        self.attempts[id(unit)] = attempts
        log = open(log_path, "a", encoding="utf-8")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        cores = self.slots[slot]
        # the child inherits the lock, so the folder stays locked while it runs, and dies with this process
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=slot_env(cores),
                                   preexec_fn=child_preexec(_pin(cores)),
                                   pass_fds=() if lock_fd is None else (lock_fd,))
        self.summary.runs.append(unit)
        return _Running(unit, process, log, log_path, command, time.monotonic(), slot, lock_fd, attempts)

    def finish(self, running: _Running, code: int) -> Optional[str]:
        running.log.close()
        release_lock(running.lock_fd)
        unit = running.unit
        wall = time.monotonic() - running.start
        final = os.path.join(unit.round_dir(self.results_dir, None), RUN_RESULTS_FILE)
        end_attempt(cell_dir(self.results_dir, unit.cell), running.attempts, code, wall,
                    reported_runtime(final) if code == 0 else None)
        if code != 0:
            self.record(unit, running.command, wall, final=False)
            return f"exit code {code}; see {running.log_path}:\n{_tail(running.log_path)}"
        return self.record(unit, running.command, wall, final=True)

    def run(self, plan: list[Unit], todo: list[Unit], bar) -> None:
        queue, running = list(todo), self.running
        dependents: dict[int, list[Unit]] = {}
        for unit in plan:
            if unit.source is not None:
                dependents.setdefault(id(unit.source), []).append(unit)
        free = list(range(len(self.slots)))
        stopping = False
        while queue or running:
            for unit in list(queue):
                if stopping or not free:
                    break
                source = unit.source
                if source is not None and not source.dense_ready(self.results_dir):
                    if id(source) in self.failed_units or (source not in queue and all(r.unit is not source for r in running)):
                        queue.remove(unit)
                        self.fail(unit, f"the dense fine-tuning it starts from ({source.run_relpath}) did not finish")
                        continue
                    continue  # waits for its dense run
                queue.remove(unit)
                bar.set_postfix_str(str(unit.cell))
                try:
                    running.append(self.start(unit, free[0]))
                except LockHeld as err:
                    self.finished.add(id(unit))
                    self.fail(unit, str(err))
                    continue
                free.pop(0)
            for item in list(running):
                code = item.process.poll()
                if code is None:
                    if item.unit.kind == "chain":
                        self.record(item.unit, item.command, 0.0, final=False)
                    continue
                running.remove(item)
                free.append(item.slot)
                free.sort()
                error = self.finish(item, code)
                self.finished.add(id(item.unit))
                bar.update(self.left[id(item.unit)])
                if error is not None:
                    self.failed_units.add(id(item.unit))
                    self.fail(item.unit, error)
                    stopping = stopping or self.stop_on_error
                self.cleanup(item.unit, dependents)
            if stopping and not running:
                break
            if running:
                time.sleep(_POLL_S)

    def fail(self, unit: Unit, error: str) -> None:
        self.failed_units.add(id(unit))
        for cell, _ in unit.records:
            if cell.key not in self.done and cell in self.wanted:
                self.summary.failed.append((cell, error))
        if not any(c in self.wanted for c, _ in unit.records):
            self.summary.failed.append((unit.cell, error))
        self.log(f"FAILED {unit.cell}: {error}")

    def cleanup(self, unit: Unit, dependents: dict[int, list[Unit]]) -> None:
        """With delete_run_dirs: a run's folder goes once it and every run starting from it are done."""
        if not self.delete_run_dirs:
            return
        for candidate in [unit] + ([unit.source] if unit.source is not None else []):
            waiting = [d for d in dependents.get(id(candidate), []) if id(d) not in self.finished and d in self.todo]
            if id(candidate) in self.finished and id(candidate) not in self.failed_units and not waiting:
                shutil.rmtree(os.path.join(self.results_dir, candidate.run_relpath), ignore_errors=True)


def run_sweep(cells: list[Cell], results_dir: str, launcher: Launcher, delete_run_dirs: bool = False,
              stop_on_error: bool = False, log: Optional[Callable[[str], None]] = None, jobs: int = 1) -> SweepSummary:
    """Run every run with a cell lacking a valid result; report (and set aside) malformed results and redo them.

    Messages go to `log` (default: stderr, above the progress bar). `jobs`: runs at once, each on its own
    1/jobs of the cores (see the module docstring).
    """
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    sweep = _Sweep(cells, results_dir, launcher, delete_run_dirs, stop_on_error, log, jobs)
    summary = sweep.summary
    statuses = cell_statuses(cells, results_dir, launcher.model)
    summary.skipped = [s.cell for s in statuses if s.done]
    sweep.done = {s.cell.key for s in statuses if s.done}
    plan = build_plan(cells)
    todo = sweep.todo = pending_units(plan, sweep.done, results_dir)
    sweep.left = {id(u): u.remaining_fine_tunings(results_dir) for u in todo}  # a resumed chain's saved rounds
    runs = sum(sweep.left.values())
    pending = len(cells) - len(summary.skipped)
    log(f"{len(cells)} cells: {len(summary.skipped)} done, {pending} to run ({runs} fine-tunings in {len(todo)} runs)")
    for status in statuses:
        if status.problem:
            log(f"redoing {status.cell}: {status.problem}")
            summary.redone.append((status.cell, status.problem))
            path = os.path.join(cell_dir(results_dir, status.cell), RESULT_FILE)
            os.replace(path, path + ".rejected")
    bar = tqdm(total=runs, desc="smc-bench", unit="fine-tuning", dynamic_ncols=True)
    try:
        with children_end_with_us():  # SIGTERM/SIGHUP, Ctrl-C or an error: no child keeps training
            try:
                sweep.run(plan, todo, bar)
            finally:
                stop_children([r.process for r in sweep.running])
    finally:
        bar.close()
    return summary


def _tail(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()[-_LOG_TAIL_LINES:]
    return "".join("    " + line for line in lines).rstrip()


def probe_step_cost(launcher: Launcher, cell: Cell, results_dir: str, steps: int, jobs: int = 1):
    """Time `cell`'s run at `steps` and at 2 x `steps` optimizer steps (no checkpoints, no in-loop evaluation):
    the difference is the cost of `steps` steps, the rest the start-up (loading, data, final evaluation)."""
    from .plan import StepCost

    if steps < 1:
        raise ValueError(f"--probe-steps must be at least 1, got {steps}")
    root = os.path.join(results_dir, ".probe")
    walls = []
    for n in (steps, 2 * steps):
        out = os.path.join(root, f"steps-{n}")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        command = launcher.command(cell, out) + ["--max_steps", str(n), "--save_strategy", "no",
                                                 "--eval_strategy", "no", "--report_to", "none"]
        log_path = os.path.join(root, f"steps-{n}.log")
        slot = thread_slots(jobs)[0]
        start = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=slot_env(slot),
                                   preexec_fn=_pin(slot))
        walls.append(time.monotonic() - start)
        if code != 0:
            raise RuntimeError(f"the probe run of {cell} failed (exit code {code}); see {log_path}:\n{_tail(log_path)}")
    shutil.rmtree(root, ignore_errors=True)
    step_s = max(walls[1] - walls[0], 0.0) / steps
    return StepCost(step_s, max(walls[0] - steps * step_s, 0.0), f"probe of {steps} and {2 * steps} steps on {cell}")
