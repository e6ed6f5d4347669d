"""Honest sparsity reports: zeros counted in the weights, per module and overall, beside the target."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..io.sparsity_block import ModuleSparsity, SparsityReport
from .masks import MaskSet
from .patterns import NMPattern, input_dims, nm_violations
from .selection import select_parameters
from .zeros import count_pruned, count_zeros, total_pruned


@torch.no_grad()
def sparsity_report(model: nn.Module, masks: Optional[MaskSet] = None, config=None) -> SparsityReport:
    """Per-module and overall sparsity of the selected weights.

    The selection comes from `masks` if given, else from `config` (its targets/ignore), else the default.
    Targets: per module, the fraction the mask prunes; overall, `config.sparsity` when the config's method prunes
    to it (`config.method_class.prunes_to_target`), else the masks' fraction.

    With an N:M `config.pattern`, every group of every module is checked: the masks' kept weights (or, without
    masks, the weights' non-zeros) must number at most N per group of M along the input dimension.
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
    method = config.method_class if config is not None else None
    never_masks = method is not None and not method.masks_weights  # dense: every module's target is 0
    modules = []
    for name, param in params.items():
        mask = masks.masks.get(name) if masks is not None else None
        target = count_pruned(mask) / mask.numel() if mask is not None else (0.0 if never_masks else None)
        numel = math.prod(masks.shapes[name]) if masks is not None else param.numel()
        modules.append(ModuleSparsity(name, numel, zeros[name], target))
    if method is not None and method.prunes_to_target:
        target = config.sparsity
    elif masks is not None and not masks.is_dense:
        target = total_pruned(masks.masks.values()) / masks.numel()
    else:
        target = 0.0 if never_masks else None
    pattern = getattr(config, "pattern", None)
    violations = None
    if pattern is not None:
        kept = {n: masks.masks[n] if masks is not None and n in masks.masks else p.detach() != 0
                for n, p in params.items()}
        violations = nm_violations(kept, NMPattern.parse(pattern), input_dims(model, params), exact=False)
    return SparsityReport(modules, target, pattern, violations)
