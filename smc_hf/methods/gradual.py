"""Methods whose mask grows during fine-tuning: GMP."""

from __future__ import annotations

from ..core.context import PruneContext
from ..core.schedules import GradualSchedule, cubic_sparsity
from .base import Legend, SparsityMethod
from .registry import METHODS


@METHODS.register("gmp")
class GMP(SparsityMethod):
    """Gradual magnitude pruning (Zhu & Gupta 2017): global magnitude, cubic from 0 to the target.

    As SMC-Bench's release: updates at the multiples of `update_every` (the task's value, e.g. 500 on CSQA and
    1,000 on arithmetic; default a sixth of training) from 10% up to 80% of training. Unlike the release, a last
    update lands exactly on `end_step`, so the run reaches the target rather than ~99% of it; `exact_end=False`
    restores the release's schedule.
    """

    timing = "during"
    events = frozenset({"after_optimizer_step"})
    legend = Legend("GMP (During)", 4, "#2ca02c", "D")
    supports_pattern = False
    pattern_conflict = "raises the sparsity of every layer gradually from 0"
    #: The release's initial_prune_time and final_prune_time, as fractions of training.
    default_begin = 0.1
    default_end = 0.8

    def setup(self, ctx: PruneContext) -> None:
        self.schedule = GradualSchedule.from_config(
            self.config, ctx.max_steps, begin=self.default_begin, end=self.default_end
        )

    def target_at(self, step: int) -> float:
        return cubic_sparsity(step, self.schedule.begin, self.schedule.end, self.config.sparsity)

    def after_optimizer_step(self, ctx: PruneContext) -> None:
        if self.schedule.is_update(ctx.step):
            self.prune_to(ctx, self.target_at(ctx.step))
