"""`smc-bench`: run the SMC-Bench grid through run_glue_like.py, then tabulate and plot it.

    smc-bench run --tasks csqa,svamp --methods omp_after,lth,gmp,snip,rigl:snip --sparsities paper \
        --seeds 1,2,3 --model roberta-large --output results/ -- --max_steps 3000
    smc-bench run ... --dry-run --probe-steps 20       # the fine-tunings it will do, and the time they take
    smc-bench run ... --jobs 2                          # two runs at once, each on half the cores
    smc-bench run ... --print-commands > cells.txt     # one line per pending run, for a job array
    smc-bench report results/                           # results/report/{summary.csv,summary.md,<task>.png}
    smc-bench copy-results results/ archive/            # the result files alone (KB each), e.g. into a repository;
    smc-bench copy-results archive/ new-results/        # back on another machine: the sweep there skips them

Arguments after `--` go to every run; `--task-args csqa="--train_file a.jsonl --validation_file b.jsonl"`
to one task's runs. Finished cells are skipped, so the same command resumes a killed sweep.

Each fine-tuning is done once: one dense run per task, seed and fold (the dense row; OMP/Random After and the
other methods that start from a dense fine-tuning load its model), and one LTH chain per task, seed and fold
whose round k is the LTH cell at the k-th sparsity (a killed chain resumes in its round). MAWPS and ASDiv-A
run folds 0-4 by default (`--folds`); the report pools folds as the paper (correct / examples over all folds).
Runs go one after another; `--jobs N` runs N at once, each with 1/N of the cores (OMP_NUM_THREADS,
MKL_NUM_THREADS and CPU affinity), since two multi-threaded torch processes on the same cores spin.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Optional


_VALUES_OF_OTHER_COMMANDS = ("--task-args", "--accelerate-args")


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our arguments and those after `--`; values of the options above are bound with `=`, since argparse
    would take a value such as `--cpu` for an option of its own."""
    own, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    bound, i = [], 0
    while i < len(own):
        if own[i] in _VALUES_OF_OTHER_COMMANDS and i + 1 < len(own):
            bound.append(f"{own[i]}={own[i + 1]}")
            i += 2
        else:
            bound.append(own[i])
            i += 1
    return bound, rest


def _task_args(items: list[str], tasks: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        task, sep, args = item.partition("=")
        if not sep or not task:
            raise ValueError(f"--task-args wants TASK=ARGS, got {item!r}")
        if task not in tasks:
            raise ValueError(f"--task-args names task {task!r}, which is not in --tasks ({', '.join(tasks)})")
        out.setdefault(task, []).extend(shlex.split(args))
    return out


def _check_tasks(tasks: list[str], entry: str) -> None:
    """Task names are checked against the task registry when the sweep runs the project's own entry script."""
    from smc_hf.bench import default_entry

    if os.path.abspath(entry) != os.path.abspath(default_entry()):
        return
    from smc_hf.pruning.task_source import task_provider

    provider = task_provider(required=False)
    if provider is None:
        return
    unknown = [t for t in tasks if t not in provider.TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(provider.TASKS))}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smc-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or print the commands of) every cell of the grid")
    run.add_argument("--tasks", required=True, help="comma-separated task names (those of the installed task provider)")
    run.add_argument("--methods", required=True,
                     help="comma-separated methods; rigl:omp, rigl:snip, rigl:random pick RigL's initial mask")
    run.add_argument("--sparsities", default="paper",
                     help="'paper' (0.2 ... 0.893, the ten LTH-round sparsities) or a comma-separated list")
    run.add_argument("--seeds", default="1", help="comma-separated seeds (default: 1)")
    run.add_argument("--folds", default="default",
                     help="cross-validation folds of MAWPS and ASDiv-A: 'default' (0-4) or a comma-separated list")
    run.add_argument("--jobs", type=int, default=1,
                     help="runs at once, each with 1/N of the cores (default 1: one after another)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the fine-tunings the sweep would do (shared dense runs, LTH chains, cells) and an "
                          "estimated time, and exit")
    run.add_argument("--step-seconds", type=float,
                     help="--dry-run: seconds per optimizer step, for the estimate (instead of a probe)")
    run.add_argument("--probe-steps", type=int,
                     help="--dry-run: time the first pending run at N and 2N steps to measure the step and start-up cost")
    run.add_argument("--steps-per-run", type=int,
                     help="--dry-run: optimizer steps per fine-tuning (default: --max_steps of the run arguments)")
    run.add_argument("--model", help="--model_name_or_path for every run (default: each task's checkpoint)")
    run.add_argument("--output", required=True, help="results directory (one folder per cell)")
    run.add_argument("--entry", help="entry script (default: run_glue_like.py at the repository root)")
    run.add_argument("--task-args", action="append", default=[], metavar="TASK=ARGS",
                     help="extra arguments for one task's runs: --task-args=svamp='--data_dir data/arithmetic'")
    run.add_argument("--no-dense", action="store_true", help="do not add the dense baseline cells")
    run.add_argument("--accelerate", action="store_true", help="start each run with `accelerate launch`")
    run.add_argument("--accelerate-args", default="",
                     help="arguments for `accelerate launch`, e.g. --accelerate-args='--num_processes 4'")
    run.add_argument("--print-commands", action="store_true",
                     help="print one `smc-bench run` line per pending run (for a cluster job array) and exit; "
                          "stage 2 lines start from the dense runs of stage 1")
    run.add_argument("--delete-run-dirs", action="store_true",
                     help="delete each cell's checkpoints and weights once its result is recorded")
    run.add_argument("--stop-on-error", action="store_true", help="stop at the first failed cell")

    report = sub.add_parser("report", help="tables (CSV, Markdown) and one figure per task from a results directory")
    report.add_argument("results_dir")
    report.add_argument("--out", help="where to write (default: RESULTS_DIR/report)")
    report.add_argument("--tolerance", type=float, default=1.0,
                        help="metric points from dense that still count as matching it (default: 1)")
    report.add_argument("--metric", help="report this key of the runs' metrics instead of the primary metric "
                        "(e.g. eval_high_accuracy for RACE-High); default folder RESULTS_DIR/report-KEY")

    copy = sub.add_parser("copy-results", help="copy finished cells' result files (not their run folders) to another "
                          "results directory, e.g. one under version control, or back into a new one to resume there")
    copy.add_argument("source")
    copy.add_argument("dest")
    copy.add_argument("--overwrite", action="store_true",
                      help="replace a countable result file in DEST that differs (default: keep it)")
    return parser


def _run(opts: argparse.Namespace, passthrough: list[str]) -> int:
    from smc_hf.bench import Launcher, build_grid, default_entry, parse_methods, parse_seeds, parse_sparsities
    from smc_hf.bench.grid import parse_folds, parse_list
    from smc_hf.bench.sweep import run_sweep, thread_slots

    tasks = parse_list(opts.tasks, "tasks")
    entry = opts.entry or default_entry()
    _check_tasks(tasks, entry)
    thread_slots(opts.jobs)  # an impossible --jobs fails before any run
    cells = build_grid(tasks, parse_methods(opts.methods), parse_sparsities(opts.sparsities),
                       parse_seeds(opts.seeds), dense=not opts.no_dense, folds=parse_folds(opts.folds, tasks))
    launcher = Launcher(entry, opts.model, passthrough, _task_args(opts.task_args, tasks), opts.accelerate,
                        shlex.split(opts.accelerate_args))
    if opts.print_commands or opts.dry_run:
        return _plan_only(opts, cells, launcher)
    os.makedirs(opts.output, exist_ok=True)
    summary = run_sweep(cells, opts.output, launcher, opts.delete_run_dirs, opts.stop_on_error, jobs=opts.jobs)
    print(f"done: {len(summary.completed)} run, {len(summary.skipped)} skipped (already done), "
          f"{len(summary.redone)} redone, {len(summary.failed)} failed", file=sys.stderr)
    for cell, error in summary.failed:
        print(f"  failed: {cell}: {error.splitlines()[0]}", file=sys.stderr)
    return 0 if summary.ok else 1


def _plan_only(opts: argparse.Namespace, cells, launcher) -> int:
    """--print-commands and --dry-run: what the sweep would run; nothing is trained (but a --probe-steps probe)."""
    from smc_hf.bench.grid import DENSE, Cell, MethodSpec
    from smc_hf.bench.plan import StepCost, build_plan, dry_run_lines, steps_from_args
    from smc_hf.bench.sweep import cell_statuses, pending_units, probe_step_cost

    statuses = cell_statuses(cells, opts.output, opts.model)
    plan = build_plan(cells)
    todo = pending_units(plan, {s.cell.key for s in statuses if s.done}, opts.output)
    if opts.print_commands:
        stages = [("shared dense runs, LTH chains and cells that start from nothing",
                   [u for u in todo if u.source is None]),
                  ("cells that start from a dense run of stage 1", [u for u in todo if u.source is not None])]
        for number, (title, units) in enumerate(stages, 1):
            if units:
                print(f"# stage {number}: {title}")
            for unit in units:
                print(launcher.cells_line([c for c, _ in unit.records] or [unit.cell], opts.output))
        print(f"# {len(todo)} runs pending for {sum(not s.done for s in statuses)} of {len(cells)} cells", file=sys.stderr)
        return 0
    cost = None
    if opts.step_seconds is not None:
        if opts.step_seconds <= 0:
            raise ValueError(f"--step-seconds must be > 0, got {opts.step_seconds}")
        cost = StepCost(opts.step_seconds, 0.0, "--step-seconds")
    elif opts.probe_steps and todo:
        first = todo[0].cell  # probed as a dense run: one round, whatever the method
        probe = Cell(first.task, MethodSpec(DENSE), 0.0, first.seed, 1, first.fold)
        cost = probe_step_cost(launcher, probe, opts.output, opts.probe_steps, opts.jobs)
    steps = {}
    for task in dict.fromkeys(c.task for c in cells):
        steps[task] = opts.steps_per_run or steps_from_args(launcher.task_args.get(task, []) + launcher.extra_args)
    for line in dry_run_lines(todo, len(plan) - len(todo), steps, cost, opts.output):
        print(line)
    return 0


def _report(opts: argparse.Namespace) -> int:
    from smc_hf.bench import write_report
    from smc_hf.bench.grid import format_sparsity

    report = write_report(opts.results_dir, opts.out, opts.tolerance, opts.metric)
    for problem in report.problems:
        print(f"not counted: {problem}", file=sys.stderr)
    for problem in report.layer_problems:
        print(f"no per-module row: {problem}", file=sys.stderr)
    print(f"{report.cells} cells -> {report.csv}, {report.markdown}, {report.layers}, {len(report.figures)} figure(s)")
    for (task, method), sparsity in report.within_dense.items():
        best = "none" if sparsity is None else format_sparsity(sparsity)
        print(f"  {task} {method}: within {opts.tolerance:g} point(s) of dense up to sparsity {best}")
    return 0 if report.cells else 1


def _copy(opts: argparse.Namespace) -> int:
    from smc_hf.bench import RESULT_FILE
    from smc_hf.bench.archive import copy_results

    summary = copy_results(opts.source, opts.dest, opts.overwrite)
    for problem in summary.problems:
        print(f"not copied: {problem}", file=sys.stderr)
    for rel in summary.kept:
        print(f"kept: {os.path.join(opts.dest, rel, RESULT_FILE)} differs from the source's (--overwrite replaces it)", file=sys.stderr)
    print(f"{len(summary.copied)} result file(s) copied to {opts.dest}, {len(summary.same)} already there, "
          f"{len(summary.kept)} kept, {len(summary.problems)} not countable")
    return 1 if summary.problems else 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, passthrough = _split_passthrough(argv)
    parser = build_parser()
    opts = parser.parse_args(own)
    if opts.command != "run" and passthrough:
        parser.error(f"{opts.command} takes no arguments after --")
    try:
        if opts.command == "run":
            return _run(opts, passthrough)
        return _copy(opts) if opts.command == "copy-results" else _report(opts)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"smc-bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
