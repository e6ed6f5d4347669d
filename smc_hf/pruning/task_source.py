"""Where benchmark tasks come from, without smc_hf importing them.

smc_hf never imports the top-level `tasks` package (it depends on smc_hf, not the reverse). A package that
provides tasks declares an entry point in the `smc_hf.tasks` group (this project's setup.py declares
`benchmark = tasks`), or an entry script registers one with `register_task_provider`. A provider is any
object (a module will do) with `TASKS` (the task names), `get_task(name)`, and the `DataArguments` and
`ModelArguments` dataclasses the tasks take.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Optional

GROUP = "smc_hf.tasks"
_REQUIRED = ("TASKS", "get_task", "DataArguments", "ModelArguments")
_registered: Optional[Any] = None


def _checked(provider: Any, where: str) -> Any:
    missing = [name for name in _REQUIRED if not hasattr(provider, name)]
    if missing:
        raise TypeError(f"task provider {where} lacks {', '.join(missing)}; a provider offers {', '.join(_REQUIRED)}")
    return provider


def register_task_provider(provider: Optional[Any]) -> None:
    """Use `provider` for task lookups (None goes back to the installed `smc_hf.tasks` entry point)."""
    global _registered
    _registered = None if provider is None else _checked(provider, repr(getattr(provider, "__name__", provider)))


def task_provider(required: bool = True) -> Optional[Any]:
    """The registered provider, else the one installed under the `smc_hf.tasks` entry point group.

    With `required=False`, None when there is none; otherwise an error saying how to get one.
    """
    if _registered is not None:
        return _registered
    found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    if not found:
        if not required:
            return None
        raise LookupError(
            f"no task provider: nothing is installed under the '{GROUP}' entry point group. Install the "
            "benchmark with its tasks (`pip install -e .` in the smc_hf repository) or call "
            "smc_hf.pruning.task_source.register_task_provider(module) first"
        )
    if len({ep.value for ep in found}) > 1:
        raise LookupError(
            f"several task providers are installed under '{GROUP}': "
            f"{', '.join(f'{ep.name} = {ep.value}' for ep in found)}; register the one to use with "
            "register_task_provider(...)"
        )
    return _checked(found[0].load(), f"{found[0].name} = {found[0].value}")
