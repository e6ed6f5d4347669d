"""oBERT, the Optimal BERT Surgeon (Kurtic et al. 2022): second-order saliency, optionally with OBS compensation.

Two variants share the pruning step:
- `obert`: SMC-Bench's oBERT (After). The dense model is fine-tuned (round 0), pruned once with the release's
  settings (block size 1, i.e. a diagonal Fisher, gradients of one full pass over the training data, the mask
  only), then re-fine-tuned (round 1), as `omp_after`.
- `obert_gradual`: the oBERT paper's gradual pruning during fine-tuning on GMP's cubic schedule, with blocks of
  50 weights, 1024 gradient samples and the OBS weight update at every pruning step.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from ..core.context import PruneContext
from .base import Legend
from .gradual import GMP
from .one_shot import _OneShotAfter
from .registry import METHODS


class _OBSPruning:
    """The oBERT pruning step, with the variant's defaults for the options the config leaves unset (None).

    1. The empirical Fisher F = damp * I + (1/m) sum g g^T of m gradient samples, block-diagonal with blocks of
       `obert_block_size` consecutive weights (memory: see `smc_hf.core.fisher`). A sample is the gradient of one
       calibration batch, with dropout off and pruned weights' gradients zeroed; `obert_num_grads` None reads
       one full pass over the batches.
    2. Weights are ranked by w^2 / (2 [F^-1]_qq) (the `obs` criterion), globally by default, what is already
       pruned staying pruned. With block size 1 this is w^2 (damp + mean g^2) / 2.
    3. With `obert_weight_update`, the kept weights of each block absorb the change that best preserves the loss
       under the quadratic model (the OBS update); without it, the pruned weights are only masked.

    Inside a Trainer the batches are a seeded shuffle of the training set at the per-device batch size; in
    `prune_model` they come from the given dataloader in its order (fewer than asked: those at hand, warned).
    """

    default_block_size: ClassVar[int]
    default_num_grads: ClassVar[Optional[int]]
    default_weight_update: ClassVar[bool]
    criterion = "obs"
    #: A Fisher pass is costly: a target the masks already reach is not rescored.
    skip_reached_targets = True
    one_shot_capable = True
    needs_data = True

    @property
    def block_size(self) -> int:
        return self.config.obert_block_size or self.default_block_size

    @property
    def num_grads(self) -> Optional[int]:
        return self.config.obert_num_grads or self.default_num_grads

    @property
    def weight_update(self) -> bool:
        update = self.config.obert_weight_update
        return self.default_weight_update if update is None else bool(update)

    def criterion_options(self, criterion: str) -> dict[str, Any]:
        if criterion != "obs":
            return super().criterion_options(criterion)
        return {"block_size": self.block_size, "num_grads": self.num_grads, "damp": self.config.obert_damp,
                "weight_update": self.weight_update}

    def one_shot(self, ctx: PruneContext) -> None:
        self.prune_to(ctx, self.config.sparsity)


@METHODS.register("obert")
class OBERT(_OBSPruning, _OneShotAfter):
    """SMC-Bench's oBERT (After): prune the dense fine-tuned model once with a diagonal Fisher from one full pass
    over the training data and no weight update (the release's `oneshot_oBERT`), then re-fine-tune.
    `skip_dense_phase` prunes a model that is already fine-tuned at once."""

    default_block_size = 1
    default_num_grads = None
    default_weight_update = False
    legend = Legend("oBERT (After)", 11, "#393b79", "*")


@METHODS.register("obert_gradual")
class OBERTGradual(_OBSPruning, GMP):
    """The oBERT paper's gradual variant: pruning steps on GMP's cubic schedule (10% to 80% of training by
    default) from the pre-trained model, blocks of 50, 1024 gradient samples per step, OBS weight update."""

    default_block_size = 50
    default_num_grads = 1024
    default_weight_update = True
    legend = Legend("oBERT gradual (During)", 12, "#6b6ecf", "P")
