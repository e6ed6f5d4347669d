"""RigL (Evci et al. 2020): dynamic sparse training that moves connections during fine-tuning."""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch

from ..core.allocation import ordered_keys, prune_lowest
from ..core.context import PruneContext
from ..core.criteria import CRITERIA
from ..core.schedules import PeriodicSchedule
from ..core.schedules import cosine_decay as drop_fraction_at
from .base import Legend, SparsityMethod
from .registry import METHODS

logger = logging.getLogger(__name__)

INITS = {"omp": "magnitude", "snip": "snip", "random": "random"}


def drop_count(active: int, inactive: int, fraction: float) -> int:
    """Connections one layer moves: the fraction of its active weights (rounded half up), at most its inactive ones."""
    return min(math.floor(fraction * active + 0.5), inactive)


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the `count` highest scores (ties: the higher index wins, deterministically)."""
    return prune_lowest([ordered_keys(scores)], scores.numel() - count)[0]


@METHODS.register("rigl")
class RigL(SparsityMethod):
    """Start from an OMP, SNIP or random mask (`rigl_init`), then at every multiple of `update_every` up to
    `end_step` (default: the last step, as SMC-Bench's release) move connections inside each layer.

    An update at step t drops, in each layer, n = round(f_t * active) active weights of smallest magnitude, with
    the release's cosine decay f_t = m + (drop_fraction - m) * (1 + cos(pi t / end_step)) / 2 and
    m = `drop_fraction_min` (0.005), and grows n where the dense gradient of step t is largest among the weights
    that were inactive before the drop. Just-dropped weights are not regrown in the same update, so every update
    moves exactly n connections per layer and layer densities never change. Grown weights start at 0 with zeroed
    optimizer state. `rigl_release_growth` restores the release's growth: the n are grown among all weights
    inactive after the drop (just-dropped ones included; a regrown one keeps its value) and no optimizer moment
    is reset.

    The gradient is the one the Trainer computed for step t (accumulated over its micro-batches): the growth set
    is chosen in `before_optimizer_step`, where gradients are still dense, and the mask is changed after the
    optimizer step, so no extra forward pass is made. Update interval: the task's (the release's 500 on CSQA and
    protein, 1,000 on arithmetic), else a sixth of training. Layer densities come from the distribution (default:
    uniform for a random start, as the paper's Random+RigL; global for OMP and SNIP).
    """

    timing = "before"
    events = frozenset({"before_optimizer_step", "after_optimizer_step"})
    initial_masks = tuple(INITS)
    supports_pattern = False
    pattern_conflict = "moves connections anywhere inside each layer at every update"
    initial_mask_legends = {
        "snip": Legend("SNIP+RIGL (Before)", 6, "#8c564b", "<"),
        "random": Legend("Random+RIGL (Before)", 8, "#7f7f7f", "p"),
        "omp": Legend("OMP+RIGL (Before)", 10, "#17becf", "X"),
    }

    def __init__(self, config):
        super().__init__(config)
        if config.distribution is None:
            self.distribution = "uniform" if config.rigl_init == "random" else "global"
        self._growth: Optional[dict[str, torch.Tensor]] = None
        self._growth_step = -1
        self._fraction = 0.0

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        if config.rigl_init not in INITS:
            raise ValueError(f"rigl_init must be one of {', '.join(INITS)}, got {config.rigl_init!r}")
        if config.begin_step is not None:
            raise ValueError("rigl updates the mask from the first step on; begin_step is not used, leave it unset")

    def setup(self, ctx: PruneContext) -> None:
        self.schedule = PeriodicSchedule.from_config(self.config, ctx.max_steps, "rigl")

    @property
    def end(self) -> int:
        return self.schedule.end

    def is_update(self, step: int) -> bool:
        return self.schedule.is_update(step)

    def update_steps(self) -> list[int]:
        return self.schedule.events()

    def on_round_begin(self, ctx: PruneContext) -> None:
        self.prune_to(ctx, self.config.sparsity, criterion=INITS[self.config.rigl_init])

    # -- updates -------------------------------------------------------------------------------------------
    def before_optimizer_step(self, ctx: PruneContext) -> None:
        step = ctx.step + 1  # the step about to be taken
        self._growth = None
        if not self.is_update(step) or ctx.masks.is_dense:
            return
        grads = CRITERIA.get("gradient")(ctx)
        if not all(bool(torch.isfinite(g).all()) for g in grads.values()):
            logger.warning("rigl: non-finite gradients at step %d; the mask update of this step is skipped", step)
            return
        fraction = drop_fraction_at(step, self.end, self.config.drop_fraction, self.config.drop_fraction_min)
        if self.config.rigl_release_growth:  # growth is chosen after the drop, among just-dropped weights too
            self._growth, self._growth_step, self._fraction = grads, step, fraction
            return
        growth = {}
        for name, _, mask in ctx.masks.masked():
            active = int(mask.sum())
            n = drop_count(active, mask.numel() - active, fraction)
            growth[name] = _top(grads[name].masked_fill_(mask, float("-inf")), n)
        self._growth, self._growth_step = growth, step

    @torch.no_grad()
    def after_optimizer_step(self, ctx: PruneContext) -> None:
        if self._growth is None or self._growth_step != ctx.step:
            return
        pending, self._growth = self._growth, None
        release = self.config.rigl_release_growth
        for name, param, mask in list(ctx.masks.masked()):
            scores = pending[name]
            n = drop_count(int(mask.sum()), mask.numel(), self._fraction) if release else int(scores.sum())
            magnitude = param.detach().abs().float().masked_fill_(~mask, float("inf"))
            kept = mask & prune_lowest([ordered_keys(magnitude)], n)[0]
            grown = _top(scores.masked_fill_(kept, float("-inf")), n) if release else scores
            # grown weights start from zero with zero optimizer moments (they were inactive until now)
            ctx.masks.set(name, kept | grown, restart=None if release else grown)
