"""Where scores come from: one float score per selected weight, higher means more worth keeping.

Every criterion has one signature, `criterion(ctx, **options) -> Scores | LayerScores`. Scores that need
calibration (SNIP, oBERT, gradients) are stored, one float per weight; scores a layer's weights determine
(magnitude, random) are a `LayerScores`, recomputed per layer whenever allocation reads them. The options are
the criterion's own knobs (SNIP's number of batches, oBERT's block size), which a method supplies from its
config through `SparsityMethod.criterion_options`. A criterion that can also repair the weights it keeps (oBERT's OBS update)
says so with `Scores.compensate`, which the method calls with the allocated keep-masks.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .activations import weight_modules
from .allocation import LayerScores
from .calibration import calibration_gradients, calibration_loader, calibration_seed, show_progress
from .context import PruneContext
from .fisher import BlockFisher
from .patterns import input_dim_of
from .registry import Registry
from .rng import LayerDraws
from .seeds import derived_seed
from .sequential import calibration_batches, one_pass


class Scores(dict):
    """Scores by parameter name; `compensate(keep)`, when set, adjusts the kept weights once the masks are
    chosen (before they are applied)."""

    compensate: Optional[Callable[[dict[str, torch.Tensor]], None]] = None


Criterion = Callable[..., Scores]
CRITERIA: Registry[Criterion] = Registry("criterion")


def exclude_pruned(ctx: PruneContext, scores: dict[str, torch.Tensor]) -> Scores:
    """Rank already-pruned positions lowest, so pruning is monotone (what is pruned stays pruned)."""
    for name, score in scores.items():
        mask = ctx.masks.mask(name)
        if mask is not None:
            score.masked_fill_(~mask, float("-inf"))
    return Scores(scores)


def _layer_scores(ctx: PruneContext, fill: Callable[[str, torch.Tensor], None]) -> LayerScores:
    """Scores `fill(name, out)` computes per layer on demand, pruned positions ranked lowest as `exclude_pruned`."""
    params = dict(ctx.masks.named_parameters())

    @torch.no_grad()
    def fill_excluding_pruned(name: str, out: torch.Tensor) -> None:
        fill(name, out)
        mask = ctx.masks.mask(name)
        if mask is not None:
            out.masked_fill_(mask.reshape(-1).logical_not(), float("-inf"))

    return LayerScores({n: tuple(p.shape) for n, p in params.items()}, {n: p.device for n, p in params.items()},
                       fill_excluding_pruned)


@CRITERIA.register("magnitude")
def magnitude(ctx: PruneContext) -> LayerScores:
    """|w|: the criterion of OMP, GMP and LTH. Computed from the weights per layer whenever read, never stored."""
    params = dict(ctx.masks.named_parameters())

    def fill(name: str, out: torch.Tensor) -> None:
        weight = params[name].detach().reshape(-1)
        if weight.dtype == torch.float32:
            torch.abs(weight, out=out)
        else:
            out.copy_(weight).abs_()

    return _layer_scores(ctx, fill)


@CRITERIA.register("random")
def random(ctx: PruneContext) -> LayerScores:
    """Uniform random scores: layer after layer, in selection order, from one generator seeded by the run's seed
    and the round (`random_draws`), so masks reproduce; any layer can be drawn again without storing it."""
    params = dict(ctx.masks.named_parameters())
    draws = random_draws(ctx.seed, ctx.round, [p.numel() for p in params.values()])
    index = {name: i for i, name in enumerate(params)}

    def fill(name: str, out: torch.Tensor) -> None:
        if out.device.type == "cpu":
            draws.draw(index[name], out)
        else:
            out.copy_(draws.draw(index[name], torch.empty(out.numel())))

    return _layer_scores(ctx, fill)


def random_draws(seed: int, round_index: int, sizes: list[int]) -> LayerDraws:
    """The random criterion's numbers for layers of `sizes` (selection order) in round `round_index`: one
    `torch.rand` per layer from a generator seeded by `derived_seed(seed, round)`. Streaming pruning draws its
    random scores here too, so its masks equal the in-memory ones for the same seed."""
    return LayerDraws(derived_seed(seed, round_index), sizes)


@CRITERIA.register("snip")
def snip(ctx: PruneContext, batches: int = 1, train_mode: bool = False) -> Scores:
    """SNIP connection sensitivity (Lee et al. 2019): |grad * w| of the task loss, summed over `batches`
    calibration batches (one per batch, then added), at the current weights; `train_mode` keeps dropout on."""
    params = dict(ctx.masks.named_parameters())
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


@CRITERIA.register("obs")
def obs(
    ctx: PruneContext, block_size: int = 1, num_grads: Optional[int] = None, damp: float = 1e-7,
    weight_update: bool = False,
) -> Scores:
    """Optimal Brain Surgeon saliency as oBERT computes it (Kurtic et al. 2022): w^2 / (2 [F^-1]_qq) with
    F = damp * I + (1/m) sum g g^T, the empirical Fisher of `num_grads` calibration gradients (None: one full
    pass), block-diagonal with blocks of `block_size` consecutive weights; pruned weights' gradients are zeroed
    and dropout is off. With `weight_update`, `compensate` applies the OBS update to the kept weights of each
    block."""
    params = dict(ctx.masks.named_parameters())
    fisher = BlockFisher(
        {n: p.shape for n, p in params.items()}, block_size, damp, device=next(iter(params.values())).device,
    )
    for grads in calibration_gradients(
        ctx.model, params, ctx.dataloader, num_grads,
        seed=calibration_seed(ctx.seed, ctx.round, ctx.step), masks=ctx.masks.mask_dict(), require_all=False,
        what="oBERT Fisher", progress=show_progress(ctx.args),
    ):
        fisher.add(grads)
        del grads
    fisher.finalize()
    scores = exclude_pruned(ctx, {n: fisher.saliency(n, p) for n, p in params.items()})
    if weight_update:
        @torch.no_grad()
        def compensate(keep: dict[str, torch.Tensor]) -> None:
            for name, mask in keep.items():
                fisher.obs_update_(name, params[name].data, mask)
                fisher.release(name)

        scores.compensate = compensate
    return scores


def wanda_scores(weight: torch.Tensor, column_norms: torch.Tensor, input_dim: int = -1) -> torch.Tensor:
    """Wanda's |W_ij| * ||X_j||_2 (Sun et al. 2023) from the mean squares of the input columns, float32,
    shaped like the weight (`input_dim`: the weight's dimension that meets the input, 0 for a Conv1D)."""
    norms = column_norms.float().sqrt()
    shape = [1] * weight.dim()
    shape[input_dim % weight.dim()] = -1
    return weight.detach().abs().float() * norms.view(shape)


def calibration_data(ctx: PruneContext, samples: Optional[int], what: str, option: str):
    """Calibration batches for activation statistics: `samples` examples of the context's dataloader (inside a
    Trainer a seeded shuffle of the training set); no dataloader is an error naming where to give one."""
    if ctx.dataloader is None:
        raise ValueError(
            f"{what} needs calibration batches (a forward pass, labels not needed): pass dataloader= to "
            f"prune_model, --calibration-task / --calibration-file to smc-prune ({option} sets how many examples)"
        )
    loader = calibration_loader(ctx.dataloader, calibration_seed(ctx.seed, ctx.round, ctx.step))
    return calibration_batches(loader, samples, what)


@CRITERIA.register("wanda")
def wanda(ctx: PruneContext, samples: Optional[int] = None) -> Scores:
    """Wanda scores of every selected weight from one whole-model pass over `samples` calibration examples
    (None: the whole dataloader)."""
    params = dict(ctx.masks.named_parameters())
    modules = weight_modules(ctx.model, list(params))
    out: dict[str, torch.Tensor] = {}

    def score(stats: dict[str, torch.Tensor]) -> None:
        for name, norms in stats.items():
            out[name] = wanda_scores(params[name], norms, stats_dims[name])

    stats_dims = {name: input_dim_of(module) for name, module in modules.items()}
    one_pass(ctx.model, modules, calibration_data(ctx, samples, "Wanda scores", "activation_samples"), "norms", score)
    return exclude_pruned(ctx, {name: out[name] for name in params})


@CRITERIA.register("gradient")
@torch.no_grad()
def gradient(ctx: PruneContext) -> Scores:
    """|grad| of the gradients in `.grad` (RigL's growth score). Pruned positions are not excluded: they are
    where growth looks. Valid in `before_optimizer_step`, where the dense gradients of the step are present."""
    params = dict(ctx.masks.named_parameters())
    if all(p.grad is None for p in params.values()):
        raise ValueError("the gradient criterion needs gradients in .grad; use it in before_optimizer_step")
    return Scores({
        n: p.grad.detach().abs().float() if p.grad is not None else torch.zeros(p.shape, device=p.device)
        for n, p in params.items()
    })
