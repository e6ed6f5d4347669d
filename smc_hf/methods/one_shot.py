"""Methods whose mask is found once: dense, fixed, OMP and random, before or after fine-tuning."""

from __future__ import annotations

import logging
import os

from ..core.context import PruneContext
from ..core.patterns import nm_violations
from ..io.mask_file import MASKS_FILE
from .base import Legend, SparsityMethod
from .registry import METHODS

logger = logging.getLogger(__name__)


#: The dense baseline's name: config default, the benchmark's reference runs.
DENSE_METHOD = "dense"


@METHODS.register(DENSE_METHOD)
class Dense(SparsityMethod):
    """No pruning: the benchmark's dense baseline, through the same code path."""

    timing = "none"
    one_shot_capable = True
    prunes_to_target = False
    masks_weights = False
    legend = Legend("Dense", 0, "#000000", "o")

    def one_shot(self, ctx: PruneContext) -> None:
        """Nothing to prune."""

    @classmethod
    def validate(cls, config) -> None:
        if config.sparsity != 0.0:
            raise ValueError(f"method 'dense' prunes nothing, but sparsity = {config.sparsity}; pick a sparse method")


@METHODS.register("fixed")
class Fixed(SparsityMethod):
    """Keep an existing mask: the one saved beside a sparse checkpoint, else the zeros of the weights."""

    timing = "none"
    one_shot_capable = True
    prunes_to_target = False

    @classmethod
    def validate(cls, config) -> None:
        if config.sparsity != 0.0:
            raise ValueError("method 'fixed' keeps the mask it finds; leave sparsity at 0")

    def on_round_begin(self, ctx: PruneContext) -> None:
        if ctx.masks.is_dense:
            source = getattr(ctx.model, "name_or_path", "") or ""
            path = os.path.join(source, MASKS_FILE)
            if os.path.isfile(path):
                ctx.masks.load(path)
            else:
                logger.warning(
                    "method 'fixed': no %s beside the model (%r); taking the mask from the weights that are "
                    "exactly zero", MASKS_FILE, source,
                )
                ctx.masks.update({n: p.detach() != 0 for n, p in ctx.masks.named_parameters()})
        self._verify_pattern(ctx)
        self.current_sparsity = ctx.masks.pruned() / ctx.masks.numel()

    def _verify_pattern(self, ctx: PruneContext) -> None:
        """With a `pattern`, the mask found must keep at most N of every M weights in every group."""
        pattern = self.config.nm_pattern
        if pattern is None:
            return
        dims = self.check_pattern(ctx)
        bad = {n: v for n, v in nm_violations(ctx.masks.mask_dict(), pattern, dims, exact=False).items() if v}
        if bad:
            shown = ", ".join(f"{n} ({v} groups)" for n, v in list(bad.items())[:5])
            raise ValueError(
                f"method 'fixed' with pattern {pattern}: the mask keeps more than {pattern.n} of {pattern.m} weights "
                f"in {sum(bad.values())} groups of {len(bad)} layers: {shown}; prune with --pattern {pattern} first, "
                "or drop the pattern to keep this mask as it is"
            )

    one_shot = on_round_begin


class _OneShotBefore(SparsityMethod):
    timing = "before"
    one_shot_capable = True

    def on_round_begin(self, ctx: PruneContext) -> None:
        self.prune_to(ctx, self.config.sparsity)

    one_shot = on_round_begin


class _OneShotAfter(SparsityMethod):
    """Dense fine-tuning (round 0), then prune the fine-tuned weights and re-train with the same budget."""

    timing = "after"
    one_shot_capable = True
    starts_from_dense_finetune = True

    @property
    def num_rounds(self) -> int:
        return 1 if self.config.skip_dense_phase else 2

    def on_round_begin(self, ctx: PruneContext) -> None:
        if ctx.round == self.num_rounds - 1:
            self.prune_to(ctx, self.config.sparsity)

    def one_shot(self, ctx: PruneContext) -> None:
        self.prune_to(ctx, self.config.sparsity)


@METHODS.register("omp_before", aliases=("omp",))
class OMPBefore(_OneShotBefore):
    """One-shot global magnitude pruning of the pre-trained weights (the paper's OMP (Before))."""

    streaming_criterion = "magnitude"
    legend = Legend("OMP (Before)", 9, "#bcbd22", "h")


@METHODS.register("random_before", aliases=("random",))
class RandomBefore(_OneShotBefore):
    """A random mask with the same density in every layer, fixed during fine-tuning."""

    criterion = "random"
    default_distribution = "uniform"
    streaming_criterion = "random"
    legend = Legend("Random (Before)", 7, "#e377c2", ">")


@METHODS.register("omp_after")
class OMPAfter(_OneShotAfter):
    """One-shot global magnitude pruning of the fine-tuned weights, then re-training (OMP (After))."""

    streaming_criterion = "magnitude"
    legend = Legend("OMP (After)", 2, "#1f77b4", "s")


@METHODS.register("random_after")
class RandomAfter(_OneShotAfter):
    criterion = "random"
    default_distribution = "uniform"
    streaming_criterion = "random"
    legend = Legend("Random (After)", 3, "#9467bd", "v")


__all__ = ["DENSE_METHOD", "Dense", "Fixed", "OMPBefore", "RandomBefore", "OMPAfter", "RandomAfter"]
