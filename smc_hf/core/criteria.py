"""Where scores come from: one float score per selected weight, higher means more worth keeping."""

from __future__ import annotations

from typing import Callable

import torch

from .calibration import calibration_gradients, calibration_seed, show_progress
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


@CRITERIA.register("snip")
def snip(ctx: PruneContext, batches: int = 1, train_mode: bool = False) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity (Lee et al. 2019): |grad * w| of the task loss, summed over `batches`
    calibration batches (one per batch, then added), at the current weights; `train_mode` keeps dropout on."""
    params = ctx.masks.params
    scores = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}
    gradients = calibration_gradients(
        ctx.model, params, ctx.dataloader, batches, seed=calibration_seed(ctx.seed, ctx.round, ctx.step),
        what="SNIP scores", progress=show_progress(ctx.args), train_mode=train_mode,
    )
    for grads in gradients:
        with torch.no_grad():
            for name, grad in grads.items():
                scores[name].add_(grad.mul_(params[name].detach()).abs_())
    return exclude_pruned(ctx, scores)


@CRITERIA.register("gradient")
@torch.no_grad()
def gradient(ctx: PruneContext) -> dict[str, torch.Tensor]:
    """|grad| of the gradients in `.grad` (RigL's growth score). Pruned positions are not excluded: they are
    where growth looks. Valid in `before_optimizer_step`, where the dense gradients of the step are present."""
    if all(p.grad is None for p in ctx.masks.params.values()):
        raise ValueError("the gradient criterion needs gradients in .grad; use it in before_optimizer_step")
    return {
        n: p.grad.detach().abs().float() if p.grad is not None else torch.zeros(p.shape, device=p.device)
        for n, p in ctx.masks.params.items()
    }

