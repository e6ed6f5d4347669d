"""Command lines: the entry script's for one cell, and one-cell `smc-bench run` lines for a job array."""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Optional

from .grid import Cell, format_sparsity


def default_entry() -> str:
    """`run_glue_like.py` at the repository root (beside the smc_hf package)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, "run_glue_like.py")


@dataclass
class Launcher:
    """How every cell is started: the entry script, the model, extra arguments, plain Python or Accelerate."""

    entry: str
    model: Optional[str] = None
    extra_args: list[str] = field(default_factory=list)
    task_args: dict[str, list[str]] = field(default_factory=dict)
    accelerate: bool = False
    accelerate_args: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not os.path.isfile(self.entry):
            raise FileNotFoundError(f"entry script {self.entry!r} not found; pass --entry")
        self.entry = os.path.abspath(self.entry)

    def command(self, cell: Cell, output_dir: str, resume: bool = False, source: Optional[str] = None) -> list[str]:
        """The entry script's command for `cell`, writing into `output_dir`; with `source` (a saved dense
        fine-tuning) the run starts from that model and skips its dense round."""
        if self.accelerate:
            head = [sys.executable, "-m", "accelerate.commands.launch", *self.accelerate_args, self.entry]
        else:
            head = [sys.executable, self.entry]
        args = ["--task", cell.task]
        if source is not None:
            args += ["--model_name_or_path", os.path.abspath(source)]
        elif self.model:
            args += ["--model_name_or_path", self.model]
        args += cell.method.entry_args(cell.sparsity)
        if source is not None:
            args += ["--skip_dense_phase", "True"]
        args += ["--seed", str(cell.seed), *cell.fold_args, "--output_dir", output_dir]
        args += self.task_args.get(cell.task, []) + self.extra_args
        if resume and not any(a.split("=")[0] == "--resume_from_checkpoint" for a in args):
            args += ["--resume_from_checkpoint", "True"]
        return head + args

    def cell_line(self, cell: Cell, results_dir: str) -> str:
        """A shell line running just `cell` through `smc-bench run` (so it records and skips like a sweep)."""
        return self.cells_line([cell], results_dir)

    def cells_line(self, cells: list[Cell], results_dir: str) -> str:
        """A shell line running the cells of one run (a cell, or an LTH chain's cells) through `smc-bench run`."""
        first = cells[0]
        methods = list(dict.fromkeys(c.method.spec for c in cells))
        sparsities = list(dict.fromkeys(format_sparsity(c.sparsity) for c in cells if c.sparsity))
        args = ["smc-bench", "run", "--tasks", first.task, "--methods", ",".join(methods)]
        if sparsities:  # a dense cell runs at sparsity 0 whatever --sparsities says
            args += ["--sparsities", ",".join(sparsities)]
        args += ["--seeds", str(first.seed), "--output", os.path.abspath(results_dir), "--entry", self.entry,
                 "--no-dense"]
        if first.fold is not None:
            args += ["--folds", str(first.fold)]
        if self.model:
            args += ["--model", self.model]
        for task, task_args in self.task_args.items():
            if task == first.task:
                args += ["--task-args", f"{task}={shlex.join(task_args)}"]
        if self.accelerate:
            args += ["--accelerate"]
            if self.accelerate_args:
                args += ["--accelerate-args", shlex.join(self.accelerate_args)]
        if self.extra_args:
            args += ["--", *self.extra_args]
        return shlex.join(args)
