"""Per-cell result files: written atomically with a completion marker, read back with every field checked.

A result file is the only thing the report counts, so a truncated, hand-edited or misplaced file must be
caught and named here rather than averaged in.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any, Optional

from ..io.atomic import write_json
from ..version import __version__
from .grid import Cell, MethodSpec

RESULT_FILE = "result.json"
RUN_RESULTS_FILE = "all_results.json"
ATTEMPTS_FILE = "attempts.json"
FORMAT = "smc-bench-cell/1"
_PACKAGES = ("torch", "transformers", "accelerate", "datasets", "peft")
#: Evaluation metrics a cross-validated task records in each fold's `metrics` (tasks/arithmetic.py): the
#: number of dev examples answered correctly and evaluated, with `best_` in front for the best evaluation when
#: the run reports that one (`metric_rule` "best"). The report pools folds with them (sum correct / sum
#: examples), as the paper.
COUNT_KEYS = ("eval_answer_correct", "eval_examples")
#: How far an LTH round's achieved sparsity may be from its cell's (the grid prints 0.59 for 0.5904).
ROUND_SPARSITY_TOLERANCE = 0.01


class ResultError(ValueError):
    """A result file (or a run's all_results.json) that cannot be counted; the message says which and why."""


@dataclass(frozen=True)
class CellResult:
    """The figures of one finished cell, as the tables and plots need them."""

    task: str
    method: str
    sparsity: float
    seed: int
    model: str
    metric_name: str
    metric: float
    achieved_sparsity: float
    wall_time_s: float
    path: str
    #: Every evaluation metric of the run (e.g. RACE's eval_middle_accuracy and eval_high_accuracy).
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)
    #: Cross-validation fold (None: the task has none).
    fold: Optional[int] = None
    #: Which evaluation `metric` is: "best" over training (the paper) or "final".
    metric_rule: str = "final"
    #: The file's `sparsity.modules` as written (checked only where used: `layer_table`).
    modules: dict[str, Any] = field(default_factory=dict, compare=False)

    def count_keys(self) -> tuple[str, str]:
        prefix = "best_" if self.metric_rule == "best" else ""
        return tuple(prefix + key for key in COUNT_KEYS)

    def counts(self) -> Optional[tuple[int, int]]:
        """(correct, examples) of the evaluation `metric` reports, when the run recorded them (`count_keys`)."""
        correct, total = (self.metrics.get(k) for k in self.count_keys())
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (correct, total)):
            return None
        if total <= 0 or not 0 <= correct <= total or correct != int(correct) or total != int(total):
            raise ResultError(f"{self.path}: {self.count_keys()[0]} = {correct}, {self.count_keys()[1]} = {total} are not counts "
                              "of correct and evaluated examples")
        return int(correct), int(total)

    def with_metric(self, key: str) -> "CellResult":
        """This result scored by `metrics[key]` instead of the task's primary metric."""
        value = _finite(self.metrics.get(key), self.path, f"metrics.{key}")
        name = key[len("eval_"):] if key.startswith("eval_") else key
        return replace(self, metric=value, metric_name=name)


def environment_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "smc_hf": __version__}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def read_run_results(path: str, cell: Cell, ran: Optional[Cell] = None, round_idx: Optional[int] = None) -> dict[str, Any]:
    """A run's all_results.json recorded as `cell`'s result, checked against the run that wrote it.

    `ran` is the cell the run was launched as (default `cell`): an LTH chain is launched at its highest
    sparsity and records its lower cells (and the dense one) from its rounds; `round_idx` is that round.
    """
    ran = ran or cell
    data = _load_json(path)
    _require(data, path, {"task": str, "metric_name": str, "metric": (int, float), "sparsity": dict,
                          "sparsity_config": dict})
    if data["task"] != cell.task:
        raise ResultError(f"{path}: task is {data['task']!r}, the cell's is {cell.task!r}")
    _finite(data["metric"], path, "metric")
    achieved = _finite(data["sparsity"].get("achieved"), path, "sparsity.achieved")
    config = data["sparsity_config"]
    spec = MethodSpec(str(config.get("method")), config.get("rigl_init") if ran.method.rigl_init else None)
    if spec != ran.method:
        raise ResultError(f"{path}: ran method {spec.spec!r}, the cell is {ran.method.spec!r}")
    if not math.isclose(float(config.get("sparsity", -1.0)), ran.sparsity, abs_tol=1e-9):
        raise ResultError(f"{path}: ran at sparsity {config.get('sparsity')}, the cell is at {ran.sparsity}")
    if round_idx is not None:
        if data.get("round") != round_idx:
            raise ResultError(f"{path}: holds round {data.get('round')!r}, expected round {round_idx} for {cell}")
        if abs(achieved - cell.sparsity) > ROUND_SPARSITY_TOLERANCE:
            raise ResultError(f"{path}: round {round_idx} reached sparsity {achieved:.4f}, "
                              f"the cell {cell} is at {cell.sparsity}")
    return data


def begin_attempt(folder: str, log_path: str) -> list[dict[str, Any]]:
    """Record the start of an attempt at a run in `folder/attempts.json`, and close any attempt whose
    `smc-bench` was killed: it ended when its log was last written (its run reported no train_runtime)."""
    path = os.path.join(folder, ATTEMPTS_FILE)
    attempts = []
    if os.path.isfile(path):
        try:
            attempts = _load_json(path).get("attempts", [])
        except ResultError:
            attempts = []
    for attempt in attempts:
        if "wall_s" not in attempt:
            started = float(attempt.get("started", 0.0))
            ended = os.path.getmtime(log_path) if os.path.isfile(log_path) else started
            attempt.update(wall_s=max(ended - started, 0.0), exit_code=None, train_runtime=None, killed=True)
    attempts.append({"started": time.time()})
    write_json(path, {"attempts": attempts}, indent=2)
    return attempts


def end_attempt(folder: str, attempts: list[dict[str, Any]], exit_code: int, wall_s: float,
                train_runtime: Optional[float]) -> None:
    attempts[-1].update(wall_s=wall_s, exit_code=exit_code, train_runtime=train_runtime, killed=False)
    write_json(os.path.join(folder, ATTEMPTS_FILE), {"attempts": attempts}, indent=2)


def reported_runtime(path: str) -> Optional[float]:
    """The train_runtime a run's all_results.json reports, or None."""
    try:
        value = _load_json(path).get("train_runtime")
    except ResultError:
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def attempt_totals(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """Cost over every attempt at a run: wall time summed; train_runtime summed, counting an attempt that
    never reported one (killed or failed) at its wall time, as it spent that time training."""
    def runtime(a):
        value = a.get("train_runtime")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float(a["wall_s"])

    return {
        "train_runtime": sum(runtime(a) for a in attempts),
        "train_runtime_last_attempt": attempts[-1].get("train_runtime"),
        "wall_time_s": sum(float(a["wall_s"]) for a in attempts),
        "wall_time_last_attempt_s": float(attempts[-1]["wall_s"]),
        "attempts": len(attempts),
    }


def build_result(cell: Cell, model: Optional[str], run: dict[str, Any], command: list[str], wall_time_s: float,
                 shared: Optional[dict[str, Any]] = None, attempts: Optional[list[dict[str, Any]]] = None) -> dict:
    """The cell's result record; `complete` comes last and marks a file written to the end.

    `shared` says where a result that another run produced comes from (an LTH chain's round, or the dense
    fine-tuning an after-training cell started from). With `attempts` (see `begin_attempt`), train_runtime and
    wall_time_s are sums over every attempt at the run, the last attempt's kept apart."""
    totals = attempt_totals(attempts) if attempts else {
        "train_runtime": run.get("train_runtime"), "train_runtime_last_attempt": run.get("train_runtime"),
        "wall_time_s": wall_time_s, "wall_time_last_attempt_s": wall_time_s, "attempts": 1,
    }
    cell_data: dict[str, Any] = {"task": cell.task, "method": cell.method.spec, "sparsity": cell.sparsity,
                                 "seed": cell.seed}
    if cell.fold is not None:
        cell_data["fold"] = cell.fold
    return {
        "format": FORMAT,
        "cell": cell_data,
        "model": model or str(run.get("model_name_or_path") or ""),
        "metric_name": run["metric_name"],
        "metric": float(run["metric"]),
        **{key: run[key] for key in ("metric_rule", "final_metric") if key in run},
        "sparsity": run["sparsity"],
        "sparsity_config": run["sparsity_config"],
        "metrics": run.get("metrics", {}),
        **totals,
        **({"shared_run": shared} if shared else {}),
        "command": command,
        "versions": environment_versions(),
        "argv": sys.argv,
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "complete": True,
    }


def read_result(path: str, root: Optional[str] = None) -> CellResult:
    """A result file, validated: format, completion marker, field types, and (given `root`) its location."""
    data = _load_json(path)
    if data.get("format") != FORMAT:
        raise ResultError(f"{path}: not a {FORMAT} file (format = {data.get('format')!r})")
    if data.get("complete") is not True:
        raise ResultError(f"{path}: partial result (no completion marker)")
    _require(data, path, {"cell": dict, "model": str, "metric_name": str, "metric": (int, float),
                          "sparsity": dict, "wall_time_s": (int, float)})
    cell_data = data["cell"]
    _require(cell_data, f"{path} (cell)", {"task": str, "method": str, "sparsity": (int, float), "seed": int})
    try:
        spec = MethodSpec.parse(cell_data["method"])
    except ValueError as err:
        raise ResultError(f"{path}: {err}") from None
    fold = cell_data.get("fold")
    if fold is not None and (not isinstance(fold, int) or isinstance(fold, bool)):
        raise ResultError(f"{path} (cell): field 'fold' has the wrong type ({type(fold).__name__})")
    cell = Cell(cell_data["task"], spec, float(cell_data["sparsity"]), cell_data["seed"], fold=fold)
    if root is not None:
        where = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.abspath(root))
        if os.path.normpath(where) != os.path.normpath(cell.relpath):
            raise ResultError(f"{path}: holds cell {cell} whose folder is {cell.relpath}, not {where}")
    metric = _finite(data["metric"], path, "metric")
    achieved = _finite(data["sparsity"].get("achieved"), path, "sparsity.achieved")
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    modules = data["sparsity"].get("modules")
    return CellResult(cell.task, spec.spec, cell.sparsity, cell.seed, data["model"], data["metric_name"], metric,
                      achieved, float(data["wall_time_s"]), path, metrics, fold,
                      "best" if data.get("metric_rule") == "best" else "final",
                      modules if isinstance(modules, dict) else {})


def scan_results(root: str) -> tuple[list[CellResult], list[str]]:
    """Every result file under `root` that can be counted, and a message for each one that cannot."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no results directory {root!r}")
    results, problems = [], []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if RESULT_FILE in files:
            try:
                results.append(read_result(os.path.join(folder, RESULT_FILE), root))
            except ResultError as err:
                problems.append(str(err))
    return results, problems


def _load_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ResultError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ResultError(f"{path}: malformed or partial JSON ({err})") from None
    if not isinstance(data, dict):
        raise ResultError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _require(data: dict, where: str, fields: dict[str, Any]) -> None:
    for name, kind in fields.items():
        if name not in data:
            raise ResultError(f"{where}: missing field {name!r}")
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ResultError(f"{where}: field {name!r} has the wrong type ({type(value).__name__})")


def _finite(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ResultError(f"{where}: {name} is not a finite number ({value!r})")
    return float(value)
