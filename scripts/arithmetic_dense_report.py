"""Learning curves and per-fold figures of the arithmetic dense runs (`scripts/arithmetic_dense.sh`).

    python scripts/arithmetic_dense_report.py RUNS_DIR OUT_DIR   # curves.csv, summary.md, curves.png

Reads each `RUNS_DIR/<task>/fold-<k>`: the finished run's trainer_state.json, or an unfinished run's newest
checkpoint, so a run in progress is reported as far as it got (and marked so). Wall time is the sum of the
attempts that `arithmetic_dense.sh` recorded (start and last heartbeat of each), evaluation included.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Optional

from smc_hf.bench.names import dataset_title
from tasks.metrics import pool_folds

#: The published from-scratch dense numbers this run has to reach (issue 12: GTS, SVAMP paper, 5-fold).
BARS = {"mawps": 80.0, "asdiv-a": 70.0}


@dataclass
class FoldRun:
    task: str
    fold: int
    finished: bool
    planned_epochs: float
    global_step: int
    wall_s: float
    wall_to_state_s: float  # the wall time its global_step took (a run in progress is past its checkpoint)
    curve: list[dict] = field(default_factory=list)  # one row per evaluation

    @property
    def best(self) -> Optional[dict]:
        return max(self.curve, key=lambda r: (r["answer_accuracy"], -r["epoch"])) if self.curve else None

    @property
    def last(self) -> Optional[dict]:
        return self.curve[-1] if self.curve else None


def _state_file(run_dir: str) -> Optional[str]:
    if os.path.isfile(os.path.join(run_dir, "all_results.json")):
        return os.path.join(run_dir, "trainer_state.json")
    checkpoints = glob.glob(os.path.join(run_dir, "checkpoint-*", "trainer_state.json"))
    steps = [(int(re.search(r"checkpoint-(\d+)", c).group(1)), c) for c in checkpoints]
    return max(steps)[1] if steps else None


def _wall_seconds(run_dir: str, state_file: str) -> tuple[float, float]:
    """Seconds over all attempts, and seconds up to the saved state (what its global step took)."""
    total = 0.0
    attempts = os.path.join(run_dir, "attempts.tsv")
    if os.path.isfile(attempts):
        with open(attempts, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    start, end = map(float, line.split())
                    total += end - start
    to_state = total
    start_file, beat_file = os.path.join(run_dir, "attempt_start"), os.path.join(run_dir, "heartbeat")
    if os.path.isfile(beat_file) and os.path.isfile(start_file):  # the attempt in progress (or last killed)
        with open(start_file, encoding="utf-8") as s, open(beat_file, encoding="utf-8") as b:
            start, beat = float(s.read()), float(b.read())
        total += beat - start
        to_state += max(0.0, min(os.path.getmtime(state_file), beat) - start)
    return total, to_state


def read_run(run_dir: str, task: str, fold: int) -> Optional[FoldRun]:
    state_file = _state_file(run_dir)
    if state_file is None:
        return None
    with open(state_file, encoding="utf-8") as f:
        state = json.load(f)
    curve, losses = [], []
    for entry in state["log_history"]:
        if "loss" in entry:
            losses.append(entry["loss"])
        if "eval_answer_accuracy" in entry:
            curve.append({"epoch": round(entry["epoch"], 3), "step": entry["step"],
                          "answer_accuracy": entry["eval_answer_accuracy"],
                          "equation_accuracy": entry.get("eval_equation_accuracy"),
                          "answer_correct": entry.get("eval_answer_correct"), "examples": entry.get("eval_examples"),
                          "eval_loss": entry.get("eval_loss"),
                          "train_loss": sum(losses) / len(losses) if losses else None})
            losses = []
    return FoldRun(task, fold, os.path.isfile(os.path.join(run_dir, "all_results.json")),
                   state.get("num_train_epochs"), state["global_step"], *_wall_seconds(run_dir, state_file), curve)


def collect(runs_dir: str) -> list[FoldRun]:
    runs = []
    for task in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        for fold_dir in sorted(glob.glob(os.path.join(runs_dir, task, "fold-*"))):
            run = read_run(fold_dir, task, int(fold_dir.rsplit("-", 1)[1]))
            if run is not None:
                runs.append(run)
    return runs


def _pooled(runs: list[FoldRun], pick) -> Optional[float]:
    rows = [pick(r) for r in runs]
    if any(row is None or row["examples"] is None for row in rows):
        return None
    return pool_folds((row["answer_correct"], row["examples"]) for row in rows)


def write_summary(runs: list[FoldRun], out_dir: str) -> str:
    lines = ["# Arithmetic dense runs: GTS on MiniLM, the paper's recipe", "",
             "Answer accuracy (%) on each fold's dev split, evaluated every epoch (beam 5). `best` selects the epoch "
             "on that split, as the paper did; `last` is the newest evaluation beside it. Wall time includes "
             "evaluation; steps per second are optimizer steps per wall-clock second.", ""]
    for task in sorted({r.task for r in runs}):
        mine = sorted((r for r in runs if r.task == task), key=lambda r: r.fold)
        lines += [f"## {dataset_title(task)} (bar: 5-fold {BARS.get(task, float('nan')):.0f})", "",
                  "| fold | epochs done / planned | best (epoch) | last | wall time (h) | steps/s | status |",
                  "|---:|---:|---:|---:|---:|---:|---|"]
        for r in mine:
            best, last = r.best, r.last
            rate = f"{r.global_step / r.wall_to_state_s:.2f}" if r.wall_to_state_s > 0 else ""
            lines.append(
                f"| {r.fold} | {last['epoch'] if last else 0:g} / {r.planned_epochs:g} | "
                f"{best['answer_accuracy']:.2f} ({best['epoch']:g}) | {last['answer_accuracy']:.2f} | "
                f"{r.wall_s / 3600:.2f} | {rate} | {'finished' if r.finished else 'in progress'} |"
                if best else f"| {r.fold} | 0 / {r.planned_epochs:g} | | | {r.wall_s / 3600:.2f} | | in progress |")
        if len(mine) == 5 and all(r.finished for r in mine):
            lines += ["", f"Pooled over the 5 folds (correct / examples): best {_pooled(mine, lambda r: r.best):.2f}, "
                          f"last {_pooled(mine, lambda r: r.last):.2f}."]
        else:
            lines += ["", f"Folds finished: {sum(r.finished for r in mine)} of 5; no 5-fold figure yet."]
        lines.append("")
    path = os.path.join(out_dir, "summary.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


def write_curves(runs: list[FoldRun], out_dir: str) -> None:
    columns = ["task", "fold", "epoch", "step", "answer_accuracy", "equation_accuracy", "answer_correct", "examples",
               "eval_loss", "train_loss"]
    with open(os.path.join(out_dir, "curves.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in runs:
            for row in r.curve:
                writer.writerow({"task": r.task, "fold": r.fold, **row})


def plot_curves(runs: list[FoldRun], out_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r.task for r in runs})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in sorted((r for r in runs if r.task == task), key=lambda r: r.fold):
            ax.plot([p["epoch"] for p in r.curve], [p["answer_accuracy"] for p in r.curve], marker=".",
                    label=f"fold {r.fold}" + ("" if r.finished else " (running)"))
        if task in BARS:
            ax.axhline(BARS[task], color="black", linestyle="--", linewidth=1, label=f"bar {BARS[task]:.0f}")
        ax.set(title=f"{dataset_title(task)}: dense GTS + MiniLM", xlabel="epoch", ylabel="answer accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "curves.png"), dpi=110)
    plt.close(fig)


def main(runs_dir: str, out_dir: str) -> int:
    runs = collect(runs_dir)
    if not runs:
        print(f"{runs_dir}: no run with a checkpoint yet (scripts/arithmetic_dense.sh writes them)", file=sys.stderr)
        return 1
    os.makedirs(out_dir, exist_ok=True)
    write_curves(runs, out_dir)
    plot_curves(runs, out_dir)
    print(open(write_summary(runs, out_dir), encoding="utf-8").read())
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
