"""Registry of the SMC-Bench tasks: `get_task(name)` returns a fresh `TaskDefinition`."""

from __future__ import annotations

from .arithmetic import AsdivA, Mawps, Svamp
from .base import DataArguments, DataError, ModelArguments, TaskDefinition
from .commonsense import CommonsenseQA, Race, WinoGrande
from .protein import HotProteinS, HotProteinS2C2, HotProteinS2C5, Meltome, ThermoProt
from .translation import Translation2to2, Translation5to5, Translation10to10

TASKS: dict[str, type[TaskDefinition]] = {
    cls.name: cls
    for cls in (
        CommonsenseQA, WinoGrande, Race,
        Mawps, AsdivA, Svamp,
        HotProteinS, HotProteinS2C5, HotProteinS2C2, Meltome, ThermoProt,
        Translation2to2, Translation5to5, Translation10to10,
    )
}


def get_task(name: str) -> TaskDefinition:
    """The task registered under `name`; a KeyError listing the known names otherwise."""
    try:
        return TASKS[name]()
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


__all__ = ["TASKS", "get_task", "TaskDefinition", "DataArguments", "ModelArguments", "DataError"]
