"""`prune_model`: one-shot pruning without training (OMP, random, and calibration-based methods)."""

from __future__ import annotations

from typing import Iterable, Optional

from torch import nn

from .config import SparsityConfig
from .context import PruneContext
from .masks import MaskSet
from .methods import build_method


def prune_model(model: nn.Module, config: SparsityConfig, dataloader: Optional[Iterable] = None) -> MaskSet:
    """Prune `model` in place to `config.sparsity` and return its masks.

    `dataloader` supplies calibration batches for gradient-based criteria (SNIP, oBERT).
    """
    method = build_method(config)
    if not method.one_shot_capable and config.method not in ("dense", "fixed"):
        method.one_shot(None)  # raises the method's own explanation
    masks = MaskSet.for_model(model, targets=config.targets, ignore=config.ignore)
    seed = config.mask_seed if config.mask_seed is not None else 0
    ctx = PruneContext(model=model, masks=masks, seed=seed, dataloader=dataloader)
    if config.method != "dense":
        method.one_shot(ctx)
    masks.apply_to_weights()
    return masks
