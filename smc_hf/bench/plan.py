"""From the grid's cells to the fine-tuning runs a sweep starts, each done once.

- One dense fine-tuning per (task, seed, fold): it records the dense cell, and the methods that declare
  `starts_from_dense_finetune` (OMP/Random After, ...) start from its saved model with `skip_dense_phase`
  instead of training the dense round again.
- One chain per (method, task, seed, fold) for methods whose rounds are tickets (LTH): a single run to the
  grid's highest sparsity of that method, whose round k is the cell at the k-th sparsity. Its round 0 is the
  dense fine-tuning, so when a chain exists it is the shared dense run (and records the dense cell).
- Every other cell is one run of its own.

Which method does what is read from the method classes (`smc_hf.methods`), never from their names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from ..methods import build_method
from .grid import DENSE, Cell, MethodSpec, format_sparsity

RUN_DIR = "run"
#: Written by SparseTrainer as the last file of a finished round (`smc_hf.training.trainer.ROUND_FILE`).
ROUND_DONE_FILE = "sparsity_round.json"
RUN_RESULTS_FILE = "all_results.json"


@dataclass
class Unit:
    """One process of the sweep: a fine-tuning run (of one or more rounds) and the cells it records.

    `records` pairs each recorded cell with the round whose evaluation is its result (None: the run's
    final result). `source` is the unit whose dense fine-tuning this one starts from.
    """

    kind: str  # DENSE (the dense fine-tuning), "chain" or "cell"
    cell: Cell  # the cell whose method, sparsity and folder the run uses
    fine_tunings: int
    records: list[tuple[Cell, Optional[int]]] = field(default_factory=list)
    source: Optional["Unit"] = None
    rounds: int = 1

    @property
    def run_relpath(self) -> str:
        return os.path.join(self.cell.relpath, RUN_DIR)

    @property
    def group(self) -> tuple:
        return (self.cell.task, self.cell.seed, self.cell.fold)

    def round_dir(self, results_dir: str, round_idx: Optional[int]) -> str:
        """Where round `round_idx` (None: the last) of this run is saved."""
        run = os.path.join(results_dir, self.run_relpath)
        if round_idx is None or round_idx == self.rounds - 1:
            return run
        return os.path.join(run, f"round-{round_idx}")

    def dense_dir(self, results_dir: str) -> str:
        """The saved dense fine-tuned model this unit provides to others (its round 0)."""
        return self.round_dir(results_dir, 0)

    def dense_ready(self, results_dir: str) -> bool:
        """Whether the dense fine-tuning is saved: a round folder is complete once SparseTrainer wrote its round
        file, a one-round run once its results are written (after the model)."""
        folder = self.dense_dir(results_dir)
        marker = ROUND_DONE_FILE if self.rounds > 1 else RUN_RESULTS_FILE
        return os.path.isfile(os.path.join(folder, marker))

    def rounds_saved(self, results_dir: Optional[str]) -> int:
        """Rounds of a multi-round run already saved (a resumed chain starts after them); 0 without a folder."""
        if results_dir is None or self.rounds < 2:
            return 0
        return sum(os.path.isfile(os.path.join(self.round_dir(results_dir, k), ROUND_DONE_FILE))
                   for k in range(self.rounds - 1))

    def remaining_fine_tunings(self, results_dir: Optional[str] = None) -> int:
        return self.fine_tunings - self.rounds_saved(results_dir)

    def describe(self, results_dir: Optional[str] = None) -> str:
        c = self.cell
        where = f"{c.task} seed={c.seed}" + (f" fold={c.fold}" if c.fold is not None else "")
        n = f"{self.fine_tunings} fine-tuning{'s' if self.fine_tunings != 1 else ''}"
        saved = self.rounds_saved(results_dir)
        if saved:
            n += f" ({saved} already saved)"
        if self.kind == DENSE:
            return f"shared dense  {where}: {n}"
        if self.kind == "chain":
            tickets = ", ".join(f"round {self.rounds - 1 if r is None else r}: {format_sparsity(cell.sparsity)}"
                                for cell, r in self.records if cell.method.method != DENSE)
            dense = " (round 0 is the shared dense run)" if self.source is None else ""
            return f"chain         {where} {c.method.spec} to {format_sparsity(c.sparsity)}: {n}{dense}; {tickets}"
        start = " from the shared dense run" if self.source is not None else ""
        return f"cell          {c}: {n}{start}"


def _method(spec: MethodSpec):
    return spec.method_class


def build_plan(cells: Iterable[Cell]) -> list[Unit]:
    """The runs that produce `cells`, dependencies first within each (task, seed, fold)."""
    cells = list(cells)
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.task, cell.seed, cell.fold), []).append(cell)
    plan: list[Unit] = []
    for (task, seed, fold), members in groups.items():
        dense_cell = next((c for c in members if c.method.method == DENSE), None)
        chains: list[Unit] = []
        by_spec: dict[MethodSpec, list[Cell]] = {}
        for cell in members:
            if _method(cell.method).rounds_are_tickets:
                by_spec.setdefault(cell.method, []).append(cell)
        for spec, tickets in by_spec.items():
            top = max(tickets, key=lambda c: c.sparsity)
            rounds = build_method(spec.config(top.sparsity)).num_rounds
            records = []
            for cell in sorted(tickets, key=lambda c: c.sparsity):
                k = build_method(spec.config(cell.sparsity)).num_rounds - 1
                records.append((cell, None if k == rounds - 1 else k))
            if len({r for _, r in records}) != len(records):
                raise ValueError(f"{task} {spec.spec}: two sparsities fall on the same round of the chain "
                                 f"({', '.join(format_sparsity(c.sparsity) for c, _ in records)})")
            chains.append(Unit("chain", top, rounds, records, rounds=rounds))
        needs_dense = any(_method(c.method).starts_from_dense_finetune for c in members)
        source: Optional[Unit] = None
        if chains:
            source = chains[0]
            if dense_cell is not None:
                source.records.insert(0, (dense_cell, 0))
            for chain in chains[1:]:  # a second ticket method still trains its own round 0
                chain.source = None
        elif dense_cell is not None or needs_dense:
            anchor = dense_cell or Cell(task, MethodSpec(DENSE), 0.0, seed, 1, fold)
            source = Unit(DENSE, anchor, 1, [(dense_cell, None)] if dense_cell else [])
        group_units = ([source] if source is not None else []) + [u for u in chains if u is not source]
        for cell in members:
            if cell is dense_cell or _method(cell.method).rounds_are_tickets:
                continue
            if _method(cell.method).starts_from_dense_finetune:
                group_units.append(Unit("cell", cell, 1, [(cell, None)], source=source))
            else:
                group_units.append(Unit("cell", cell, cell.training_runs, [(cell, None)]))
        plan.extend(group_units)
    return plan


# -- the estimate ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepCost:
    """Seconds per optimizer step and per run start (model load, data, final evaluation)."""

    step_s: float
    startup_s: float = 0.0
    source: str = "given"


def steps_from_args(args: Iterable[str]) -> Optional[int]:
    """`--max_steps N` in a run's arguments (the last one wins, as for argparse)."""
    args, found = list(args), None
    for i, arg in enumerate(args):
        match = re.fullmatch(r"--max_steps(?:=(-?\d+))?", arg)
        if match:
            value = match.group(1) if match.group(1) is not None else (args[i + 1] if i + 1 < len(args) else None)
            try:
                found = int(value) if value is not None else found
            except ValueError:
                pass
    return found if found and found > 0 else None


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def dry_run_lines(pending: list[Unit], done: int, steps_per_run: dict[str, Optional[int]],
                  cost: Optional[StepCost], results_dir: Optional[str] = None) -> list[str]:
    """What `smc-bench run --dry-run` prints: each pending run, the total of fine-tunings left (rounds a killed
    chain already saved are not counted again), and the estimate."""
    lines = [u.describe(results_dir) for u in pending]
    total = sum(u.remaining_fine_tunings(results_dir) for u in pending)
    lines.append(f"{total} fine-tunings in {len(pending)} runs ({done} runs already done)")
    if cost is None:
        lines.append("estimated time: unknown (give --step-seconds S, or --probe-steps N to time a short run)")
        return lines
    seconds, unknown = 0.0, sorted({u.cell.task for u in pending if not steps_per_run.get(u.cell.task)})
    for unit in pending:
        steps = steps_per_run.get(unit.cell.task)
        if steps:
            seconds += unit.remaining_fine_tunings(results_dir) * (cost.startup_s + steps * cost.step_s)
    basis = f"{cost.step_s:.3g} s/step ({cost.source}), {cost.startup_s:.3g} s start-up per fine-tuning"
    if unknown:
        lines.append(f"estimated time: {basis}; steps per fine-tuning unknown for {', '.join(unknown)} "
                     "(give --steps-per-run N or --max_steps in the run arguments)")
        if seconds:
            lines.append(f"estimated time of the other tasks: {format_duration(seconds)}")
        return lines
    per = ", ".join(f"{t}: {s} steps" for t, s in steps_per_run.items())
    lines.append(f"estimated time: {format_duration(seconds)} ({basis}; {per})")
    return lines
