"""SNIP (Lee et al. 2019): a mask from connection sensitivity at the pre-trained weights, fixed afterwards."""

from __future__ import annotations

from ..core.context import PruneContext
from .base import Legend, SparsityMethod
from .registry import METHODS


@METHODS.register("snip")
class SNIP(SparsityMethod):
    """Keep the weights with the largest |grad * w| of the task loss, summed over `snip_batches` training batches
    (SMC-Bench: one batch), ranked globally by default; the mask stays fixed during fine-tuning.

    Scores come from calibration passes on a seeded shuffle of the training set inside a Trainer (the release: the
    first batch of its shuffled epoch, an equally random batch), or on the dataloader given to `prune_model` in its
    own order (see `smc_hf.core.calibration`). Dropout is off unless `snip_train_mode` (the release's train-mode pass).
    """

    timing = "before"
    legend = Legend("SNIP (Before)", 5, "#ff7f0e", "^")
    criterion = "snip"
    one_shot_capable = True
    needs_data = True

    def on_round_begin(self, ctx: PruneContext) -> None:
        self.prune_to(ctx, self.config.sparsity)

    one_shot = on_round_begin
