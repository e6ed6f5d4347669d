"""`prune_model`: one-shot pruning without training (OMP, random, and calibration-based methods)."""

from __future__ import annotations

from typing import Iterable, Optional

from torch import nn

from ..config import SparsityConfig
from ..core.context import PruneContext
from ..core.masks import MaskSet
from ..methods import build_method


def prune_model(model: nn.Module, config: SparsityConfig, dataloader: Optional[Iterable] = None) -> MaskSet:
    """Prune `model` in place to `config.sparsity` and return its masks.

    `dataloader` supplies calibration batches for gradient-based criteria (SNIP, oBERT).
    """
    method = build_method(config)
    masks = MaskSet.for_model(model, targets=config.targets, ignore=config.ignore, selection=config.selection)
    seed = config.mask_seed if config.mask_seed is not None else 0
    method.one_shot(PruneContext(model=model, masks=masks, seed=seed, dataloader=dataloader))
    masks.apply_to_weights()
    return masks
