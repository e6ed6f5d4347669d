"""Honest sparsity reports: zeros counted in the weights, per module and overall, beside the target."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..io.sparsity_block import ModuleSparsity, SparsityReport
from .masks import MaskSet
from .selection import select_parameters
from .zeros import count_pruned, count_zeros, total_pruned


@torch.no_grad()
def sparsity_report(model: nn.Module, masks: Optional[MaskSet] = None, config=None) -> SparsityReport:
    """Per-module and overall sparsity of the selected weights.

    The selection comes from `masks` if given, else from `config` (its targets/ignore), else the default.
    Targets: per module, the fraction the mask prunes; overall, `config.sparsity` when the config's method prunes
    to it (`config.method_class.prunes_to_target`), else the masks' fraction.
    """
    if masks is not None:
        params = masks.params
    else:
        params = select_parameters(
            model, targets=getattr(config, "targets", None), ignore=getattr(config, "ignore", None),
            selection=getattr(config, "selection", "default"),
        )
    # With masks, counts go through the MaskSet, which knows full shapes and sharded weights (smc_hf.integrations.distributed).
    zeros = masks.weight_zeros() if masks is not None else {n: count_zeros(p) for n, p in params.items()}
    modules = []
    for name, param in params.items():
        mask = masks.masks.get(name) if masks is not None else None
        target = count_pruned(mask) / mask.numel() if mask is not None else None
        numel = math.prod(masks.shapes[name]) if masks is not None else param.numel()
        modules.append(ModuleSparsity(name, numel, zeros[name], target))
    method = config.method_class if config is not None else None
    if method is not None and method.prunes_to_target:
        target = config.sparsity
    elif masks is not None and not masks.is_dense:
        target = total_pruned(masks.masks.values()) / masks.numel()
    else:
        target = 0.0 if method is not None and not method.masks_weights else None
    return SparsityReport(modules, target)
