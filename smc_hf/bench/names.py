"""The paper's display vocabulary: legend names and order, colours, dataset titles and metric labels.

Tables and plots use these so a reader can lay our curves beside the paper's figures.
"""

from __future__ import annotations

#: Legend name of each method spec, in the order of the paper's legend (Dense first).
LEGEND: dict[str, str] = {
    "dense": "Dense",
    "lth": "LTH (After)",
    "omp_after": "OMP (After)",
    "random_after": "Random (After)",
    "gmp": "GMP (During)",
    "snip": "SNIP (Before)",
    "rigl:snip": "SNIP+RIGL (Before)",
    "random_before": "Random (Before)",
    "rigl:random": "Random+RIGL (Before)",
    "omp_before": "OMP (Before)",
    "rigl:omp": "OMP+RIGL (Before)",
    "obert": "oBERT (After)",
    "obert_gradual": "oBERT gradual (During)",
}

# Fixed per method, so a method keeps its colour and marker in every figure.
_STYLE = {
    "lth": ("#d62728", "o"),
    "omp_after": ("#1f77b4", "s"),
    "random_after": ("#9467bd", "v"),
    "gmp": ("#2ca02c", "D"),
    "snip": ("#ff7f0e", "^"),
    "rigl:snip": ("#8c564b", "<"),
    "random_before": ("#e377c2", ">"),
    "rigl:random": ("#7f7f7f", "p"),
    "omp_before": ("#bcbd22", "h"),
    "rigl:omp": ("#17becf", "X"),
    "obert": ("#393b79", "*"),
    "obert_gradual": ("#6b6ecf", "P"),
}
_FALLBACK_COLOURS = ["#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]

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
    if spec in LEGEND:
        return LEGEND[spec]
    if timing and timing != "none":
        return f"{spec} ({timing.capitalize()})"
    return spec


def legend_rank(spec: str) -> tuple[int, str]:
    """Sort key putting methods in the paper's legend order, unknown ones after, alphabetically."""
    order = list(LEGEND)
    return (order.index(spec), "") if spec in order else (len(order), spec)


def method_style(spec: str, fallback_index: int = 0) -> tuple[str, str]:
    """(colour, marker) of a method's curve."""
    return _STYLE.get(spec, (_FALLBACK_COLOURS[fallback_index % len(_FALLBACK_COLOURS)], "o"))


def dataset_title(task: str) -> str:
    return DATASETS.get(task, task)


def metric_label(metric_name: str) -> str:
    """Axis label: BLEU as is, accuracies with their percent unit."""
    if metric_name.lower() == "bleu":
        return "BLEU"
    label = metric_name.replace("_", " ")
    label = label[:1].upper() + label[1:]
    return f"{label} (%)" if "accuracy" in metric_name.lower() else label
