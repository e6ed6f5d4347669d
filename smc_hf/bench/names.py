"""The paper's display vocabulary: legend names and order, colours, dataset titles and metric labels.

Tables and plots use these so a reader can lay our curves beside the paper's figures. Each method declares
its own legend (`SparsityMethod.legend`); this module only collects them.
"""

from __future__ import annotations

from ..methods import METHODS
from ..methods.base import Legend

_FALLBACK_COLOURS = ["#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]


def _legends() -> dict[str, Legend]:
    """Each spec's legend as its method declares it (`name` or `name:initial_mask`), in the paper's order."""
    found = {}
    for name in METHODS.names():
        cls = METHODS.get(name)
        if cls.legend is not None:
            found[name] = cls.legend
        found.update({f"{name}:{init}": legend for init, legend in cls.initial_mask_legends.items()})
    return dict(sorted(found.items(), key=lambda item: item[1].rank))


def legend_names() -> dict[str, str]:
    """Legend name of each method spec, in the order of the paper's legend (Dense first)."""
    return {spec: legend.name for spec, legend in _legends().items()}

DATASETS: dict[str, str] = {
    "csqa": "CommonsenseQA",
    "winogrande": "WinoGrande",
    "race": "RACE",
    "mawps": "MAWPS",
    "asdiv-a": "ASDiv-A",
    "svamp": "SVAMP",
    "hp-s": "HotProtein HP-S",
    "hp-s2c5": "HotProtein HP-S²C5",
    "hp-s2c2": "HotProtein HP-S²C2",
    "meltome": "Meltome Atlas",
    "thermoprot": "ThermoProt",
    "translation-2to2": "Translation 2-to-2",
    "translation-5to5": "Translation 5-to-5",
    "translation-10to10": "Translation 10-to-10",
}


def legend_name(spec: str, timing: str | None = None) -> str:
    """The paper's name for a method spec; unknown methods get `name (Timing)` from their registered timing."""
    legend = _legends().get(spec)
    if legend is not None:
        return legend.name
    if timing and timing != "none":
        return f"{spec} ({timing.capitalize()})"
    return spec


def legend_rank(spec: str) -> tuple[int, str]:
    """Sort key putting methods in the paper's legend order, unknown ones after, alphabetically."""
    order = list(_legends())
    return (order.index(spec), "") if spec in order else (len(order), spec)


def method_style(spec: str, fallback_index: int = 0) -> tuple[str, str]:
    """(colour, marker) of a method's curve."""
    legend = _legends().get(spec)
    if legend is None:
        return _FALLBACK_COLOURS[fallback_index % len(_FALLBACK_COLOURS)], "o"
    return legend.colour, legend.marker


def dataset_title(task: str) -> str:
    return DATASETS.get(task, task)


def metric_label(metric_name: str) -> str:
    """Axis label: BLEU as is, accuracies with their percent unit."""
    if metric_name.lower() == "bleu":
        return "BLEU"
    label = metric_name.replace("_", " ")
    label = label[:1].upper() + label[1:]
    return f"{label} (%)" if "accuracy" in metric_name.lower() else label
