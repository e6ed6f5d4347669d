"""Honest sparsity reports: zeros counted in the weights, per module and overall, beside the target."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from .masks import MaskSet
from .selection import select_parameters


@dataclass
class ModuleSparsity:
    name: str
    numel: int
    zeros: int
    target: Optional[float] = None

    @property
    def achieved(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    modules: list[ModuleSparsity] = field(default_factory=list)
    target: Optional[float] = None

    @property
    def numel(self) -> int:
        return sum(m.numel for m in self.modules)

    @property
    def zeros(self) -> int:
        return sum(m.zeros for m in self.modules)

    @property
    def achieved(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "achieved": self.achieved,
            "selected_numel": self.numel,
            "zeros": self.zeros,
            "modules": {
                m.name: {"numel": m.numel, "zeros": m.zeros, "achieved": m.achieved, "target": m.target}
                for m in self.modules
            },
        }

    def to_markdown(self) -> str:
        def pct(x):
            return "-" if x is None else f"{100 * x:.2f}%"

        lines = ["| module | weights | target | achieved |", "|---|---:|---:|---:|"]
        lines += [f"| {m.name} | {m.numel:,} | {pct(m.target)} | {pct(m.achieved)} |" for m in self.modules]
        lines.append(f"| **overall** | {self.numel:,} | {pct(self.target)} | {pct(self.achieved)} |")
        return "\n".join(lines)

    __str__ = to_markdown


@torch.no_grad()
def sparsity_report(model: nn.Module, masks: Optional[MaskSet] = None, config=None) -> SparsityReport:
    """Per-module and overall sparsity of the selected weights.

    The selection comes from `masks` if given, else from `config` (its targets/ignore), else the default.
    Targets: per module, the fraction the mask prunes; overall, `config.sparsity` (or the masks' fraction).
    """
    if masks is not None:
        params = masks.params
    else:
        params = select_parameters(
            model, targets=getattr(config, "targets", None), ignore=getattr(config, "ignore", None),
            selection=getattr(config, "selection", "default"),
        )
    # With masks, counts go through the MaskSet, which knows full shapes and sharded weights (smc_hf.distributed).
    zeros = masks.weight_zeros() if masks is not None else {n: int((p == 0).sum()) for n, p in params.items()}
    modules = []
    for name, param in params.items():
        mask = masks.masks.get(name) if masks is not None else None
        target = float((~mask).sum()) / mask.numel() if mask is not None else None
        numel = math.prod(masks.shapes[name]) if masks is not None else param.numel()
        modules.append(ModuleSparsity(name, numel, zeros[name], target))
    if config is not None and config.method not in ("dense", "fixed"):
        target = config.sparsity
    elif masks is not None and not masks.is_dense:
        target = sum(int((~m).sum()) for m in masks.masks.values()) / masks.numel()
    else:
        target = 0.0 if config is not None and config.method == "dense" else None
    return SparsityReport(modules, target)
