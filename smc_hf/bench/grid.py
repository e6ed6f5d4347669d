"""The benchmark grid: method specs, sparsity lists and the cells (task x method x sparsity x seed x fold).

Every cell is checked against `SparsityConfig` when the grid is built, so a typo fails before the first
run rather than in the hundredth.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Optional

from ..config import SparsityConfig
from ..methods import DENSE_METHOD, METHODS, build_method
from .names import legend_name

#: The paper's grid: 1 - 0.8^k for k = 1..10, the sparsities of successive 20% LTH rounds.
PAPER_SPARSITIES: tuple[float, ...] = (0.2, 0.36, 0.488, 0.59, 0.672, 0.738, 0.791, 0.8325, 0.866, 0.893)

DENSE = DENSE_METHOD

#: Tasks scored by 5-fold cross-validation (the paper's MAWPS and ASDiv-A): their default folds.
CV_FOLDS: dict[str, tuple[int, ...]] = {"mawps": (0, 1, 2, 3, 4), "asdiv-a": (0, 1, 2, 3, 4)}


@dataclass(frozen=True)
class MethodSpec:
    """A method as the grid names it: `omp_after`, or `rigl:snip` for RigL started from a SNIP mask."""

    method: str
    rigl_init: Optional[str] = None

    @classmethod
    def parse(cls, text: str) -> "MethodSpec":
        name, _, init = text.strip().partition(":")
        if not name:
            raise ValueError(f"empty method in {text!r}")
        method = METHODS.canonical(name)
        choices = METHODS.get(method).initial_masks
        if choices:
            init = init or SparsityConfig.rigl_init
            if init not in choices:
                listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
                raise ValueError(f"{text!r}: {method} starts from an {listed} mask, not {init!r}")
            return cls(method, init)
        if init:
            takers = [n for n in METHODS.names() if METHODS.get(n).initial_masks]
            specs = [f"{n}:{i}" for n in takers for i in METHODS.get(n).initial_masks]
            raise ValueError(f"{text!r}: only {' and '.join(takers)} takes an initial mask ({', '.join(specs)})")
        return cls(method)

    @property
    def spec(self) -> str:
        return f"{self.method}:{self.rigl_init}" if self.rigl_init else self.method

    @property
    def slug(self) -> str:
        """The spec as a folder name."""
        return self.spec.replace(":", "-")

    @property
    def legend(self) -> str:
        return legend_name(self.spec, getattr(METHODS.get(self.method), "timing", None))

    def config(self, sparsity: float) -> SparsityConfig:
        extra = {"rigl_init": self.rigl_init} if self.rigl_init else {}
        return SparsityConfig(method=self.method, sparsity=sparsity, **extra)

    @property
    def method_class(self):
        return METHODS.get(self.method)

    def entry_args(self, sparsity: float) -> list[str]:
        """The entry script's arguments naming this method at `sparsity`."""
        args = ["--sparsity_method", self.method, "--sparsity", format_sparsity(sparsity)]
        if self.rigl_init:
            args += ["--rigl_init", self.rigl_init]
        return args


def format_sparsity(sparsity: float) -> str:
    return f"{sparsity:g}"


@dataclass(frozen=True)
class Cell:
    """One point of the grid; `relpath` is its folder under the results directory.

    `fold` is the cross-validation fold (None for tasks without folds). `training_runs` is what the cell
    costs run on its own (2 for after-training methods, 1 + rounds for LTH); a sweep shares the dense
    fine-tuning and LTH's rounds between cells (see `plan.py`).
    """

    task: str
    method: MethodSpec
    sparsity: float
    seed: int
    training_runs: int = field(default=1, compare=False)
    fold: Optional[int] = None

    @property
    def key(self) -> tuple:
        return (self.task, self.method.spec, round(self.sparsity, 6), self.seed, self.fold)

    @property
    def relpath(self) -> str:
        parts = [self.task, self.method.slug, f"sparsity-{format_sparsity(self.sparsity)}", f"seed-{self.seed}"]
        return os.path.join(*parts, *([f"fold-{self.fold}"] if self.fold is not None else []))

    @property
    def fold_args(self) -> list[str]:
        return ["--fold", str(self.fold)] if self.fold is not None else []

    def __str__(self) -> str:
        fold = f" fold={self.fold}" if self.fold is not None else ""
        return f"{self.task} {self.method.spec} s={format_sparsity(self.sparsity)} seed={self.seed}{fold}"


def parse_sparsities(text: str) -> list[float]:
    """`paper` (the paper's ten sparsities) or a comma-separated list of fractions in (0, 1)."""
    values: list[float] = []
    for item in _items(text, "sparsities"):
        if item.lower() == "paper":
            values.extend(PAPER_SPARSITIES)
            continue
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"sparsity {item!r} is not a number (or 'paper')") from None
        if not (math.isfinite(value) and 0.0 < value < 1.0):
            raise ValueError(f"sparsity {item!r} must be in (0, 1); the dense baseline is added by itself")
        values.append(value)
    return _unique(values)


def parse_seeds(text: str) -> list[int]:
    try:
        return _unique(int(item) for item in _items(text, "seeds"))
    except ValueError as err:
        raise ValueError(f"seeds must be integers: {text!r} ({err})") from None


def parse_methods(text: str) -> list[MethodSpec]:
    return _unique(MethodSpec.parse(item) for item in _items(text, "methods"))


def parse_folds(text: Optional[str], tasks: Iterable[str]) -> dict[str, tuple[Optional[int], ...]]:
    """Folds per task: `default` (0-4 for the cross-validated tasks in `CV_FOLDS`, none for the others) or
    a comma-separated list of fold numbers, which applies to the cross-validated tasks only."""
    tasks = list(tasks)
    if text is None or str(text).strip().lower() == "default":
        return {t: CV_FOLDS.get(t, (None,)) for t in tasks}
    try:
        folds = tuple(_unique(int(item) for item in _items(text, "folds")))
    except ValueError as err:
        raise ValueError(f"folds must be 'default' or integers: {text!r} ({err})") from None
    if any(f < 0 for f in folds):
        raise ValueError(f"folds must be >= 0: {text!r}")
    if not any(t in CV_FOLDS for t in tasks):
        raise ValueError(f"--folds {text!r}: none of the tasks ({', '.join(tasks)}) has folds; "
                         f"cross-validated tasks: {', '.join(CV_FOLDS)}")
    return {t: folds if t in CV_FOLDS else (None,) for t in tasks}


def parse_list(text: str, what: str) -> list[str]:
    return _unique(_items(text, what))


def build_grid(tasks: Iterable[str], methods: Iterable[MethodSpec], sparsities: Iterable[float],
               seeds: Iterable[int], dense: bool = True,
               folds: Optional[dict[str, Iterable[Optional[int]]]] = None) -> list[Cell]:
    """Every cell, task-major; a dense cell per task, seed and fold unless `dense` is False.

    `dense` in `methods` is always run at sparsity 0. `folds` maps a task to its folds (default: none, i.e.
    one run per cell). Each cell's config is validated here, and `training_runs` records how many
    fine-tunings it would cost alone.
    """
    methods, sparsities, seeds = list(methods), list(sparsities), list(seeds)
    folds = folds or {}
    dense_spec = MethodSpec(DENSE)
    if dense and dense_spec not in methods:
        methods = [dense_spec] + methods
    cells = []
    for task in tasks:
        for spec in methods:
            for sparsity in ([0.0] if spec.method == DENSE else sparsities):
                for seed in seeds:
                    try:
                        runs = build_method(spec.config(sparsity)).num_rounds
                    except ValueError as err:
                        raise ValueError(f"cell {task} {spec.spec} sparsity {sparsity}: {err}") from None
                    for fold in folds.get(task, (None,)):
                        cells.append(Cell(task, spec, sparsity, seed, runs, fold))
    if not cells:
        raise ValueError("the grid is empty: give at least one task, seed and method (and sparsity)")
    return cells


def _items(text: str, what: str) -> list[str]:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise ValueError(f"no {what} given ({text!r})")
    return items


def _unique(values):
    seen, out = set(), []
    for value in values:
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out
