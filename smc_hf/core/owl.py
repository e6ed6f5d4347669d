"""OWL, Outlier Weighed Layerwise sparsity (Yin et al., ICML 2024): blocks with more outlier scores stay denser.

As the authors' code (luuyin/OWL, `lib/prune_all.py`, `prune_*_outlier`):
1. A "layer" is a transformer block: every selected weight whose name shares the prefix up to its first integer
   component (`bert.encoder.layer.3`, `model.layers.11`); a weight with no integer in its name is a block alone.
2. Outlier ratio D_b: the fraction of the block's scores (all its weights together) above M times their mean
   (`owl_threshold_m`, the paper's M = 5; already-pruned -inf scores are left out of both).
3. r_b = (D_b - min D) / (max D - min D) * 2 lambda (`owl_lambda`, the paper's 0.08), so r is in [0, 2 lambda];
   block sparsity s_b = s - (r_b - mean r): the highest outlier ratio gets s - lambda-ish, the lowest s + lambda-ish.
   All D equal: every block gets s.

Where this goes beyond the code, to keep counts exact: the mean of r is weighted by block size (the code's plain
mean, since its blocks are equal), so sum_b s_b n_b = s N; then one common shift t, found by bisection, clips
block sparsities to [already pruned, 1] and makes sum of clip((s_b + t) n_w) = round(s N) (t = 0 when nothing
clips; the code clamps s_b at 0.01 and misses the total); each weight w of block b gets the real count
(s_b + t) n_w, rounded down, and the shortfall to round(s N) goes one weight each to the largest fractional parts
(ties: selection order). Within each weight the lowest scores are pruned by the `uniform` distribution. Scores are
the criterion's (the code finds outliers in Wanda's |W| ||X|| whatever the pruning criterion: the two agree
under `wanda`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from .allocation import DISTRIBUTIONS

#: The paper's hyperparameters (the README's commands): outlier threshold M and sparsity spread lambda.
DEFAULT_THRESHOLD_M = 5.0
DEFAULT_LAMBDA = 0.08

_BLOCK = re.compile(r"^(.*?(?:^|\.)\d+)(?:\.|$)")


def block_of(name: str) -> str:
    """The transformer block a parameter belongs to: its name up to the first integer component, else itself."""
    match = _BLOCK.match(name)
    return match.group(1) if match else name


def _stats(scores: torch.Tensor) -> tuple[int, float, int]:
    """(finite count, sum of the finite scores, count of -inf, i.e. already pruned) of one tensor."""
    finite = torch.isfinite(scores)
    total = float(scores.float()[finite].sum(dtype=torch.float64))
    return int(finite.sum()), total, int(torch.isneginf(scores).sum())


def _outliers(scores: torch.Tensor, threshold: float) -> int:
    return int(((scores > threshold) & torch.isfinite(scores)).sum())


def outlier_ratio(scores: list[torch.Tensor], threshold_m: float) -> float:
    """Fraction of the finite scores (all tensors together) above `threshold_m` times their mean."""
    stats = [_stats(s) for s in scores]
    finite = sum(f for f, _, _ in stats)
    if finite == 0:
        return 0.0
    threshold = threshold_m * sum(t for _, t, _ in stats) / finite
    return sum(_outliers(s, threshold) for s in scores) / finite


def block_sparsities(ratios: list[float], sizes: list[int], sparsity: float, lam: float) -> list[float]:
    """OWL's block sparsities from outlier ratios: ratios min-max scaled to [0, 2 lam], centred on their mean
    weighted by `sizes`, subtracted from `sparsity` (more outliers, less pruning)."""
    low, high = min(ratios), max(ratios)
    if high == low:
        return [sparsity] * len(ratios)
    spread = [(d - low) / (high - low) * 2 * lam for d in ratios]
    mean = sum(r * n for r, n in zip(spread, sizes)) / sum(sizes)
    return [sparsity - (r - mean) for r in spread]


def exact_counts(desired: list[float], sizes: list[int], lower: list[int], total: int) -> list[int]:
    """Integer prune counts c_i in [lower_i, sizes_i] summing to `total`, as near `desired_i * sizes_i` as one
    common shift t allows: c_i from clip((desired_i + t) * sizes_i), t by bisection, then floors and the
    shortfall to the largest fractional parts (ties: lower index)."""
    if not sum(lower) <= total <= sum(sizes):
        raise ValueError(f"cannot prune {total} weights when at least {sum(lower)} and at most {sum(sizes)} can be")

    def real(t: float) -> list[float]:
        return [min(max((d + t) * n, lo), n) for d, n, lo in zip(desired, sizes, lower)]

    lo_t, hi_t = -2.0 - max(desired, default=0.0), 2.0 - min(desired, default=0.0)
    for _ in range(200):
        mid = (lo_t + hi_t) / 2
        if sum(real(mid)) < total:
            lo_t = mid
        else:
            hi_t = mid
    exact = real(hi_t)
    counts = [max(lo, min(n, math.floor(x))) for x, n, lo in zip(exact, sizes, lower)]
    shortfall = total - sum(counts)
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - math.floor(exact[i])), i))
    while shortfall > 0:
        moved = 0
        for i in order:
            if shortfall == 0:
                break
            if counts[i] < sizes[i]:
                counts[i] += 1
                shortfall -= 1
                moved += 1
        if not moved:  # pragma: no cover - the bound check above makes room
            raise RuntimeError("OWL: no layer can take the remaining prune counts")
    for i in reversed(order):  # float excess (never more than a weight or two): take back from the smallest parts
        while shortfall < 0 and counts[i] > lower[i]:
            counts[i] -= 1
            shortfall += 1
    return counts


def owl_prune_counts(
    scores: Mapping, sparsity: float, threshold_m: float = DEFAULT_THRESHOLD_M, lam: float = DEFAULT_LAMBDA,
) -> dict[str, int]:
    """Weights to prune per selected parameter under OWL, summing to round(sparsity * N).

    Reads each layer's scores twice, one layer at a time (`LayerScores` recompute them: never all held at once):
    once for its size, finite sum and already-pruned count, once for its outliers against its block's threshold.
    """
    names = list(scores)
    stats = {}
    for name in names:
        layer = scores[name]
        stats[name] = (layer.numel(), *_stats(layer))
        del layer
    blocks: dict[str, list[str]] = {}
    for name in names:
        blocks.setdefault(block_of(name), []).append(name)
    thresholds = {}
    for block, members in blocks.items():
        finite = sum(stats[n][1] for n in members)
        thresholds[block] = threshold_m * sum(stats[n][2] for n in members) / finite if finite else math.inf
    outliers = {name: _outliers(scores[name], thresholds[block_of(name)]) for name in names}
    ratios = []
    for members in blocks.values():
        finite = sum(stats[n][1] for n in members)
        ratios.append(sum(outliers[n] for n in members) / finite if finite else 0.0)
    sizes = [sum(stats[n][0] for n in members) for members in blocks.values()]
    per_block = dict(zip(blocks, block_sparsities(ratios, sizes, sparsity, lam)))
    numels = [stats[n][0] for n in names]
    pruned = [stats[n][3] for n in names]
    total = round(sparsity * sum(numels))
    if sum(pruned) > total:  # a lower target than the masks already prune: no lower bound can be kept
        pruned = [0] * len(names)
    counts = exact_counts([per_block[block_of(n)] for n in names], numels, pruned, total)
    return dict(zip(names, counts))


@DISTRIBUTIONS.register("owl")
def owl(
    scores: Mapping, sparsity: float, owl_threshold_m: float = DEFAULT_THRESHOLD_M,
    owl_lambda: float = DEFAULT_LAMBDA, **_,
) -> dict[str, torch.Tensor]:
    counts = owl_prune_counts(scores, sparsity, owl_threshold_m, owl_lambda)
    uniform = DISTRIBUTIONS.get("uniform")
    masks = {}
    for name in scores:  # one layer's scores at a time; round(k / n * n) == k exactly in float64
        layer = scores[name]
        masks.update(uniform({name: layer}, counts[name] / layer.numel() if layer.numel() else 0.0))
        del layer
    return masks


__all__ = ["DEFAULT_LAMBDA", "DEFAULT_THRESHOLD_M", "block_of", "block_sparsities", "exact_counts", "outlier_ratio",
           "owl", "owl_prune_counts"]
