"""Counting zeros: the one definition of "pruned" (a False mask entry) and "zero" (an exact 0 weight)."""

from __future__ import annotations

from typing import Iterable

import torch


def count_zeros(tensor: torch.Tensor) -> int:
    """Exact zeros in `tensor`: the honest measure of achieved sparsity."""
    return int((tensor == 0).sum())


def count_pruned(mask: torch.Tensor) -> int:
    """Pruned (False) entries of one keep-mask."""
    return int((~mask).sum())


def total_pruned(masks: Iterable[torch.Tensor]) -> int:
    """Pruned entries over several keep-masks."""
    return sum(count_pruned(m) for m in masks)
