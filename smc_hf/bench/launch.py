"""Command lines: the entry script's for one cell, and one-cell `smc-bench run` lines for a job array; and
`run_child`, which runs a cell's process so that it never outlives `smc-bench`."""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

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


#: Seconds a child gets to stop after SIGTERM before it is killed.
STOP_GRACE_S = 30.0
_PR_SET_PDEATHSIG = 1


def child_preexec(then=None):
    """A `preexec_fn` that runs `then` (e.g. CPU pinning) and, on Linux, asks the kernel to send the child
    SIGTERM when this process dies, even by SIGKILL. `prctl` is looked up here, in the parent, so the child
    only makes one system call before exec."""
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None
    if prctl is None:
        return then
    parent = os.getpid()

    def preexec():
        if then is not None:
            then()
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def stop_children(processes) -> None:
    """SIGTERM every child still running, then SIGKILL those still alive after `STOP_GRACE_S`."""
    alive = [p for p in processes if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in alive:
        try:
            p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Signalled(BaseException):
    """SIGTERM or SIGHUP reached `smc-bench`: unwinds the sweep (stopping its children) before it ends."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextmanager
def children_end_with_us() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into `Signalled` inside the block, so `finally` clauses stop the children; then end
    this process by the same signal (its previous handler). Only the main thread can install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_signalled(signum, frame):
        raise Signalled(signum)

    previous = {signum: signal.signal(signum, raise_signalled) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except Signalled as caught:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        previous = {}
        os.kill(os.getpid(), caught.signum)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_child(command: list[str], pass_fds=(), **popen_kwargs) -> int:
    """Run `command` to its end and return its exit code; the child never outlives this process."""
    proc = subprocess.Popen(command, preexec_fn=child_preexec(), pass_fds=tuple(pass_fds), **popen_kwargs)
    with children_end_with_us():
        try:
            return proc.wait()
        finally:
            stop_children([proc])
