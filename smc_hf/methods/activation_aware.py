"""One-shot pruning from calibration activations: SparseGPT and Wanda, after dense fine-tuning or on any checkpoint.

Both read the inputs of the selected Linear layers on calibration batches (a forward pass: labels are not
needed) and prune layer by layer, block by block where the model is a stack of blocks, so later blocks are
calibrated on the outputs of the pruned earlier ones and one block's inputs are held at a time
(`smc_hf.core.sequential`; `sequential_calibration=False` gathers every layer's statistics in one pass).

Inside `SparseTrainer` they are after-training methods like `omp_after`: round 0 fine-tunes dense, round 1
prunes the fine-tuned weights from `activation_samples` (128) examples of a seeded shuffle of the training set,
then re-trains with the mask fixed. In `prune_model` / `smc-prune` they prune the given model from the given
calibration batches (`activation_samples` None: all of them).
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch

from ..core import rowwise  # noqa: F401  (registers the 'per_row' distribution)
from ..core.activations import weight_modules
from ..core.allocation import allocate
from ..core.context import PruneContext
from ..core.criteria import calibration_data, wanda_scores
from ..core.patterns import input_dim_of, nm_keep_mask
from ..core.rowwise import from_rows, rows_view
from ..core.sequential import prune_layerwise
from ..core.sparsegpt import sparsegpt_prune
from .base import Legend
from .one_shot import _OneShotAfter
from .registry import METHODS

#: Calibration examples read inside a Trainer when `activation_samples` is unset (the papers' 128).
TRAINER_SAMPLES = 128
#: Distributions that decide each layer from its own scores, so layers can be pruned block by block.
LAYER_LOCAL = frozenset({"per_row", "uniform"})


class _ActivationAware(_OneShotAfter):
    """Shared driver: calibration data, the layer-wise pipeline, masks set and applied per block."""

    needs_data = True
    skip_reached_targets = True
    stats_kind: ClassVar[str]
    what: ClassVar[str]

    @property
    def sequential(self) -> bool:
        return bool(self.config.sequential_calibration)

    def samples(self, ctx: PruneContext) -> Optional[int]:
        samples = self.config.activation_samples
        return TRAINER_SAMPLES if samples is None and ctx.args is not None else samples

    def prune_to(self, ctx: PruneContext, sparsity: float, criterion: str | None = None) -> None:
        if criterion is not None and criterion != self.criterion:
            return super().prune_to(ctx, sparsity, criterion)
        if round(sparsity * ctx.masks.numel()) <= ctx.masks.pruned():
            self.current_sparsity = max(self.current_sparsity, sparsity)
            return
        self.check_pattern(ctx)
        params = dict(ctx.masks.named_parameters())
        owned = {id(p) for p in ctx.model.parameters()}
        if any(id(p) not in owned for p in params.values()):
            raise ValueError(f"{self.what}: the weights to prune are not the model's own parameters (a sharded "
                             "model viewed whole through copies); prune unsharded (one process or DDP)")
        modules = weight_modules(ctx.model, list(params))
        batches = calibration_data(ctx, self.samples(ctx), self.what, "activation_samples")

        def prune_group(stats: dict[str, torch.Tensor]) -> None:
            self.prune_layers(ctx, {name: (params[name], input_dim_of(modules[name])) for name in stats}, stats,
                              sparsity)

        prune_layerwise(ctx.model, modules, batches, self.stats_kind, prune_group, sequential=self.sequential)
        self.current_sparsity = sparsity

    def prune_layers(self, ctx: PruneContext, layers: dict, stats: dict[str, torch.Tensor], sparsity: float) -> None:
        """Choose masks for `layers` (name -> (weight, input dim)) from their statistics, set them on the
        MaskSet and apply them to these weights now, before later blocks are calibrated."""
        raise NotImplementedError


@METHODS.register("wanda")
class Wanda(_ActivationAware):
    """Wanda (Sun et al. 2023): prune the lowest |W_ij| * ||X_j||_2 of every output row (`per_row`:
    round(s * inputs) per row), no weight update; with an N:M `pattern`, the N best of every M inputs of a row.
    Other distributions compare the same scores per layer (`uniform`) or across layers (`global`, `erk`, `owl`:
    one pass gathers every layer's statistics first)."""

    criterion = "wanda"
    default_distribution = "per_row"
    stats_kind = "norms"
    what = "Wanda"
    legend = Legend("Wanda (After)", 13, "#e7969c", "d")

    @property
    def sequential(self) -> bool:
        return super().sequential and (self.distribution is None or self.distribution in LAYER_LOCAL)

    @torch.no_grad()
    def prune_layers(self, ctx: PruneContext, layers: dict, stats: dict[str, torch.Tensor], sparsity: float) -> None:
        scores, dims = {}, {}
        for name, (weight, dim) in layers.items():
            score = wanda_scores(weight, stats[name], dim)
            mask = ctx.masks.mask(name)
            if mask is not None:
                score.masked_fill_(~mask, float("-inf"))
            scores[name], dims[name] = score, dim
        pattern = self.config.nm_pattern
        if pattern is not None:
            masks = {n: nm_keep_mask(s, pattern, dims[n], n) for n, s in scores.items()}
        else:
            masks = allocate(scores, sparsity, self.distribution, input_dims=dims, **self.distribution_options())
        for name, mask in masks.items():
            ctx.masks.set(name, mask)
            layers[name][0].data.mul_(mask)


@METHODS.register("sparsegpt")
class SparseGPT(_ActivationAware):
    """SparseGPT (Frantar & Alistarh 2023): per layer, the inputs' Hessian H = 2/n X X^T dampened by
    `sparsegpt_damp` x mean diag(H), column blocks of `sparsegpt_blocksize`, masks by w^2 / [H^-1]_qq^2 chosen
    block by block, OBS reconstruction of the kept weights (`smc_hf.core.sparsegpt`). Each layer loses exactly
    round(s * n) weights (the `uniform` distribution, the only one it takes); with an N:M `pattern`, each group of
    M inputs of a row is chosen when the column loop reaches it."""

    criterion = "sparsegpt"
    default_distribution = "uniform"
    stats_kind = "gram"
    what = "SparseGPT"
    legend = Legend("SparseGPT (After)", 14, "#8c6d31", "H")

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        if config.distribution not in (None, "uniform"):
            raise ValueError(
                f"sparsegpt chooses each layer's mask inside its column loop, so it prunes every layer to the "
                f"target (uniform); distribution = {config.distribution!r} cannot apply: leave it unset"
            )
        pattern = config.nm_pattern
        if pattern is not None and config.sparsegpt_blocksize % pattern.m:
            raise ValueError(
                f"pattern {pattern} chooses groups of {pattern.m} inside SparseGPT's column blocks, so "
                f"sparsegpt_blocksize ({config.sparsegpt_blocksize}) must be a multiple of {pattern.m}"
            )

    @torch.no_grad()
    def prune_layers(self, ctx: PruneContext, layers: dict, stats: dict[str, torch.Tensor], sparsity: float) -> None:
        for name in list(stats):
            weight, dim = layers[name]
            mask = ctx.masks.mask(name)
            new, keep = sparsegpt_prune(
                rows_view(weight.detach(), dim), stats.pop(name), sparsity,
                blocksize=self.config.sparsegpt_blocksize, percdamp=self.config.sparsegpt_damp,
                pattern=self.config.nm_pattern,
                pruned=None if mask is None else ~rows_view(mask, dim), what=name,
            )
            weight.data.copy_(from_rows(new, weight, dim).to(weight.dtype))
            ctx.masks.set(name, from_rows(keep, weight, dim))
