"""`PruneContext`: what a method sees when it is asked to change masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

from torch import nn

from .masks import MaskSet


@dataclass
class PruneContext:
    """The model, its masks and where training stands; built by the callback or by `prune_model`.

    `step` counts optimizer steps completed in the current round (skipped fp16 steps excluded);
    `max_steps` is the round's budget (0 for one-shot pruning outside training).
    """

    model: nn.Module
    masks: MaskSet
    step: int = 0
    max_steps: int = 0
    round: int = 0
    seed: int = 0
    optimizer: Any = None
    dataloader: Optional[Iterable] = None
    args: Any = None
    output_dir: Optional[str] = None
