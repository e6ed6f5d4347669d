"""oBERT, the Optimal BERT Surgeon (Kurtic et al. 2022): second-order saliency and OBS weight compensation."""

from __future__ import annotations

import torch

from ..allocation import allocate
from ..calibration import calibration_gradients, calibration_seed, show_progress
from ..context import PruneContext
from ..criteria import exclude_pruned
from ..fisher import BlockFisher
from .gradual import GMP
from .registry import METHODS


@METHODS.register("obert")
class OBERT(GMP):
    """Gradual pruning on GMP's cubic schedule (10% to 80% of training by default), where each pruning step:

    1. estimates the empirical Fisher from `obert_num_grads` gradient samples, block-diagonal with blocks of
       `obert_block_size` consecutive weights and damping `obert_damp` (memory: see `smc_hf.fisher`);
    2. ranks weights by w^2 / (2 [F^-1]_qq), globally by default, keeping what is already pruned pruned;
    3. applies the OBS update inside every block: the pruned weights go to zero and the kept ones of the same
       block absorb the change that best preserves the loss under the quadratic model.

    A gradient sample is the gradient of one calibration batch (with dropout off and pruned weights' gradients
    zeroed), taken by extra passes at the pruning step, so the Fisher is measured at the weights being pruned
    rather than gathered from earlier steps; inside a Trainer the batches are a seeded shuffle of the training
    set, each of the per-device batch size. In `prune_model` (one-shot, e.g. on a fine-tuned model as in
    SMC-Bench) the batches come from the given dataloader; with fewer batches than `obert_num_grads`, those at
    hand are used with a warning.
    """

    one_shot_capable = True
    needs_data = True

    def prune_to(self, ctx: PruneContext, sparsity: float, criterion=None, scores=None) -> None:
        masks = ctx.masks
        already = sum(int((~m).sum()) for m in masks.masks.values())
        if round(sparsity * masks.numel()) <= already:
            self.current_sparsity = max(self.current_sparsity, sparsity)
            return
        params = masks.params
        fisher = BlockFisher(
            {n: p.shape for n, p in params.items()}, self.config.obert_block_size, self.config.obert_damp,
            device=next(iter(params.values())).device,
        )
        for grads in calibration_gradients(
            ctx.model, params, ctx.dataloader, self.config.obert_num_grads,
            seed=calibration_seed(ctx.seed, ctx.round, ctx.step), masks=masks.masks, require_all=False,
            what="oBERT Fisher", progress=show_progress(ctx.args),
        ):
            fisher.add(grads)
            del grads
        fisher.finalize()
        scores = exclude_pruned(ctx, {n: fisher.saliency(n, p) for n, p in params.items()})
        keep = allocate(scores, sparsity, self.distribution, erk_power_scale=self.config.erk_power_scale)
        del scores
        with torch.no_grad():
            for name, mask in keep.items():
                fisher.obs_update_(name, params[name].data, mask)
                fisher.release(name)
        masks.update(keep)
        masks.apply(ctx.optimizer)
        self.current_sparsity = sparsity

    def one_shot(self, ctx: PruneContext) -> None:
        self.prune_to(ctx, self.config.sparsity)
