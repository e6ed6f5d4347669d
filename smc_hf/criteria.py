"""Where scores come from: one float score per selected weight, higher means more worth keeping."""

from __future__ import annotations

from typing import Callable

import torch

from .context import PruneContext
from .registry import Registry

Criterion = Callable[[PruneContext], dict[str, torch.Tensor]]
CRITERIA: Registry[Criterion] = Registry("criterion")


def exclude_pruned(ctx: PruneContext, scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rank already-pruned positions lowest, so pruning is monotone (what is pruned stays pruned)."""
    for name, score in scores.items():
        mask = ctx.masks.masks.get(name)
        if mask is not None:
            score.masked_fill_(~mask, float("-inf"))
    return scores


@CRITERIA.register("magnitude")
@torch.no_grad()
def magnitude(ctx: PruneContext) -> dict[str, torch.Tensor]:
    """|w|: the criterion of OMP, GMP and LTH."""
    return exclude_pruned(ctx, {n: p.detach().abs().float() for n, p in ctx.masks.params.items()})


@CRITERIA.register("random")
@torch.no_grad()
def random(ctx: PruneContext) -> dict[str, torch.Tensor]:
    """Uniform random scores from a generator seeded by the run's seed and the round, so masks reproduce."""
    gen = torch.Generator().manual_seed(int(ctx.seed) * 1000003 + ctx.round)
    scores = {n: torch.rand(p.shape, generator=gen).to(p.device) for n, p in ctx.masks.params.items()}
    return exclude_pruned(ctx, scores)
