"""The benchmark grid: method specs, sparsity lists and the cells (task x method x sparsity x seed).

Every cell is checked against `SparsityConfig` when the grid is built, so a typo fails before the first
run rather than in the hundredth.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterable, Optional

from ..config import SparsityConfig
from ..methods import METHODS, build_method
from .names import legend_name

#: The paper's grid: 1 - 0.8^k for k = 1..10, the sparsities of successive 20% LTH rounds.
PAPER_SPARSITIES: tuple[float, ...] = (0.2, 0.36, 0.488, 0.59, 0.672, 0.738, 0.791, 0.8325, 0.866, 0.893)

DENSE = "dense"


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
        if method == "rigl":
            init = init or SparsityConfig.rigl_init
            if init not in ("omp", "snip", "random"):
                raise ValueError(f"{text!r}: RigL starts from an omp, snip or random mask, not {init!r}")
            return cls(method, init)
        if init:
            raise ValueError(f"{text!r}: only rigl takes an initial mask (rigl:omp, rigl:snip, rigl:random)")
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
    """One run of the grid; `relpath` is its folder under the results directory."""

    task: str
    method: MethodSpec
    sparsity: float
    seed: int
    training_runs: int = field(default=1, compare=False)

    @property
    def key(self) -> tuple[str, str, float, int]:
        return (self.task, self.method.spec, round(self.sparsity, 6), self.seed)

    @property
    def relpath(self) -> str:
        return os.path.join(self.task, self.method.slug, f"sparsity-{format_sparsity(self.sparsity)}",
                            f"seed-{self.seed}")

    def __str__(self) -> str:
        return f"{self.task} {self.method.spec} s={format_sparsity(self.sparsity)} seed={self.seed}"


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


def parse_list(text: str, what: str) -> list[str]:
    return _unique(_items(text, what))


def build_grid(tasks: Iterable[str], methods: Iterable[MethodSpec], sparsities: Iterable[float],
               seeds: Iterable[int], dense: bool = True) -> list[Cell]:
    """Every cell, task-major; a dense cell per task and seed unless `dense` is False.

    `dense` in `methods` is always run at sparsity 0. Each cell's config is validated here, and
    `training_runs` records how many fine-tunings it costs (2 for after-training methods, 1 + rounds for LTH).
    """
    methods, sparsities, seeds = list(methods), list(sparsities), list(seeds)
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
                    cells.append(Cell(task, spec, sparsity, seed, runs))
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
