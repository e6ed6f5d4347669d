"""Copy finished cells' result files between results directories, without the run folders beside them.

A sweep's results directory mixes two things: run folders (checkpoints, weights: large, tied to one disk) and
each cell's `result.json` (a few KB: all the tables count). Copying the result files into a folder that travels
with the repository, and back into a new results directory on another machine, lets a sweep that outlives its
machine resume there: `run_sweep` skips every cell whose result file it finds, and re-runs a shared dense
fine-tuning only when a pending cell still needs its weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..io.atomic import write_text
from .results import RESULT_FILE, ResultError, read_result, scan_results


@dataclass
class CopySummary:
    """What `copy_results` did, each entry a cell folder relative to the directories."""

    copied: list[str] = field(default_factory=list)
    #: Already in the destination with the same content.
    same: list[str] = field(default_factory=list)
    #: The destination holds another countable result for the cell, left as it is (no `overwrite`).
    kept: list[str] = field(default_factory=list)
    #: Result files in the source that cannot be counted (not copied), with the reason.
    problems: list[str] = field(default_factory=list)


def copy_results(source: str, dest: str, overwrite: bool = False) -> CopySummary:
    """Copy every countable result file under `source` to the same cell folder under `dest`.

    A destination file that cannot be counted (partial, malformed) is replaced; a countable one that differs
    is kept unless `overwrite`. Files are checked as the report reads them, so nothing is copied that the
    tables would refuse, and each copy is written atomically.
    """
    if os.path.abspath(source) == os.path.abspath(dest):
        raise ValueError(f"copy_results: source and destination are the same folder ({source!r})")
    results, problems = scan_results(source)
    summary = CopySummary(problems=problems)
    for result in sorted(results, key=lambda r: r.path):
        rel = os.path.relpath(os.path.dirname(os.path.abspath(result.path)), os.path.abspath(source))
        target = os.path.join(dest, rel, RESULT_FILE)
        with open(result.path, encoding="utf-8") as handle:
            text = handle.read()
        if os.path.exists(target):
            with open(target, encoding="utf-8", errors="replace") as handle:
                if handle.read() == text:
                    summary.same.append(rel)
                    continue
            if not overwrite and _countable(target, dest):
                summary.kept.append(rel)
                continue
        write_text(target, text)
        summary.copied.append(rel)
    return summary


def _countable(path: str, root: str) -> bool:
    try:
        read_result(path, root)
    except ResultError:
        return False
    return True
