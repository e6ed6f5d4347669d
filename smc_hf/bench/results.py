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
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any, Optional

from ..version import __version__
from .grid import Cell, MethodSpec

RESULT_FILE = "result.json"
RUN_RESULTS_FILE = "all_results.json"
FORMAT = "smc-bench-cell/1"
_PACKAGES = ("torch", "transformers", "accelerate", "datasets", "peft")


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


def write_json_atomic(path: str, data: Any) -> None:
    """Write to a temporary file beside `path`, then rename: readers see the old file or the whole new one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_run_results(path: str, cell: Cell) -> dict[str, Any]:
    """The entry script's all_results.json for `cell`, checked against the cell it was launched for."""
    data = _load_json(path)
    _require(data, path, {"task": str, "metric_name": str, "metric": (int, float), "sparsity": dict,
                          "sparsity_config": dict})
    if data["task"] != cell.task:
        raise ResultError(f"{path}: task is {data['task']!r}, the cell's is {cell.task!r}")
    _finite(data["metric"], path, "metric")
    _finite(data["sparsity"].get("achieved"), path, "sparsity.achieved")
    config = data["sparsity_config"]
    ran = MethodSpec(str(config.get("method")), config.get("rigl_init") if cell.method.rigl_init else None)
    if ran != cell.method:
        raise ResultError(f"{path}: ran method {ran.spec!r}, the cell is {cell.method.spec!r}")
    if not math.isclose(float(config.get("sparsity", -1.0)), cell.sparsity, abs_tol=1e-9):
        raise ResultError(f"{path}: ran at sparsity {config.get('sparsity')}, the cell is at {cell.sparsity}")
    return data


def build_result(cell: Cell, model: Optional[str], run: dict[str, Any], command: list[str], wall_time_s: float) -> dict:
    """The cell's result record; `complete` comes last and marks a file written to the end."""
    return {
        "format": FORMAT,
        "cell": {"task": cell.task, "method": cell.method.spec, "sparsity": cell.sparsity, "seed": cell.seed},
        "model": model or str(run.get("model_name_or_path") or ""),
        "metric_name": run["metric_name"],
        "metric": float(run["metric"]),
        "sparsity": run["sparsity"],
        "sparsity_config": run["sparsity_config"],
        "metrics": run.get("metrics", {}),
        "train_runtime": run.get("train_runtime"),
        "wall_time_s": wall_time_s,
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
    cell = Cell(cell_data["task"], spec, float(cell_data["sparsity"]), cell_data["seed"])
    if root is not None:
        where = os.path.relpath(os.path.dirname(os.path.abspath(path)), os.path.abspath(root))
        if os.path.normpath(where) != os.path.normpath(cell.relpath):
            raise ResultError(f"{path}: holds cell {cell} whose folder is {cell.relpath}, not {where}")
    metric = _finite(data["metric"], path, "metric")
    achieved = _finite(data["sparsity"].get("achieved"), path, "sparsity.achieved")
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    return CellResult(cell.task, spec.spec, cell.sparsity, cell.seed, data["model"], data["metric_name"], metric,
                      achieved, float(data["wall_time_s"]), path, metrics)


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
