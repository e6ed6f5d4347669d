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

    def command(self, cell: Cell, output_dir: str, resume: bool = False) -> list[str]:
        """The entry script's command for `cell`, writing into `output_dir`."""
        if self.accelerate:
            head = [sys.executable, "-m", "accelerate.commands.launch", *self.accelerate_args, self.entry]
        else:
            head = [sys.executable, self.entry]
        args = ["--task", cell.task]
        if self.model:
            args += ["--model_name_or_path", self.model]
        args += cell.method.entry_args(cell.sparsity)
        args += ["--seed", str(cell.seed), "--output_dir", output_dir]
        args += self.task_args.get(cell.task, []) + self.extra_args
        if resume and not any(a.split("=")[0] == "--resume_from_checkpoint" for a in args):
            args += ["--resume_from_checkpoint", "True"]
        return head + args

    def cell_line(self, cell: Cell, results_dir: str) -> str:
        """A shell line running just `cell` through `smc-bench run` (so it records and skips like a sweep)."""
        args = ["smc-bench", "run", "--tasks", cell.task, "--methods", cell.method.spec]
        if cell.sparsity:  # a dense cell runs at sparsity 0 whatever --sparsities says
            args += ["--sparsities", format_sparsity(cell.sparsity)]
        args += ["--seeds", str(cell.seed), "--output", os.path.abspath(results_dir), "--entry", self.entry,
                 "--no-dense"]
        if self.model:
            args += ["--model", self.model]
        for task, task_args in self.task_args.items():
            if task == cell.task:
                args += ["--task-args", f"{task}={shlex.join(task_args)}"]
        if self.accelerate:
            args += ["--accelerate"]
            if self.accelerate_args:
                args += ["--accelerate-args", shlex.join(self.accelerate_args)]
        if self.extra_args:
            args += ["--", *self.extra_args]
        return shlex.join(args)
