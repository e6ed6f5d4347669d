"""Where sparsity goes: turn per-weight scores into keep-masks with exact counts.

- `uniform`: every layer pruned to the target (round(s * n) weights each).
- `global`: one threshold over all selected weights, round(s * N) pruned in total.
- `erk`: Erdos-Renyi-Kernel layer densities (RigL, Evci et al. 2020), round(s * N) pruned in total.

Selection is exact and memory-bounded: the k-th smallest score is found by bisection on the bit pattern
of the float32 scores, counting per layer, so no concatenation of all scores is ever built. Ties at the
threshold are broken by layer order then position, so masks are deterministic.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from .registry import Registry

Distribution = Callable[..., dict[str, torch.Tensor]]
DISTRIBUTIONS: Registry[Distribution] = Registry("distribution")

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def ordered_keys(scores: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """int32 keys whose order equals the float order of `scores` (a monotone view of IEEE-754 floats).

    `inplace` writes the keys into the storage of a float32 contiguous `scores` (which is then garbage as
    floats), so that converting all scores at once costs no second copy.
    """
    scores = scores.detach().float().contiguous()
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN: the weights or gradients they came from are not finite")
    bits = scores.view(torch.int32)
    flip = (bits >> 31) & 0x7FFFFFFF
    return bits.bitwise_xor_(flip) if inplace else bits ^ flip


def kth_smallest_key(count_le: Callable[[int], int], k: int) -> int:
    """Smallest key T with count_le(T) >= k, by bisection over the int32 range (32 counting passes)."""
    lo, hi = _INT32_MIN, _INT32_MAX
    while lo < hi:
        mid = (lo + hi) // 2
        if count_le(mid) >= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


def prune_lowest(keys: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Keep-masks pruning exactly the `k` lowest keys across `keys` (ties: earlier tensor, lower index)."""
    total = sum(t.numel() for t in keys)
    if not 0 <= k <= total:
        raise ValueError(f"cannot prune {k} of {total} weights")
    if k == 0:
        return [torch.ones_like(t, dtype=torch.bool) for t in keys]
    if len(keys) == 1:  # one tensor: torch's exact selection in one pass beats 32 counting passes
        threshold = int(torch.kthvalue(keys[0].reshape(-1), k).values)
    else:
        threshold = kth_smallest_key(lambda m: sum(int((t <= m).sum()) for t in keys), k)
    masks, remaining_ties = [], k - sum(int((t < threshold).sum()) for t in keys)
    for t in keys:
        keep = t > threshold  # a fresh contiguous tensor, so its flat view writes through
        ties = (t == threshold).flatten().nonzero().squeeze(1)
        n_pruned = min(remaining_ties, ties.numel())
        keep.view(-1)[ties[n_pruned:]] = True
        remaining_ties -= n_pruned
        masks.append(keep)
    return masks


def _counts_to_masks(scores: dict[str, torch.Tensor], prune_counts: Iterable[int]) -> dict[str, torch.Tensor]:
    return {
        name: prune_lowest([ordered_keys(score)], k)[0] for (name, score), k in zip(scores.items(), prune_counts)
    }


@DISTRIBUTIONS.register("uniform")
def uniform(scores: dict[str, torch.Tensor], sparsity: float, **_) -> dict[str, torch.Tensor]:
    return _counts_to_masks(scores, [round(sparsity * s.numel()) for s in scores.values()])


@DISTRIBUTIONS.register("global")
def global_(scores: dict[str, torch.Tensor], sparsity: float, **_) -> dict[str, torch.Tensor]:
    keys = [ordered_keys(s, inplace=True) for s in scores.values()]  # all layers at once: no second copy
    k = round(sparsity * sum(t.numel() for t in keys))
    return dict(zip(scores, prune_lowest(keys, k)))


def erk_keep_counts(shapes: list[tuple[int, ...]], sparsity: float, power_scale: float = 1.0) -> list[int]:
    """Kept weights per layer under ERK: density proportional to (sum of dims / product of dims)^power,
    layers that would exceed density 1 kept dense, rounded so the total keeps exactly N - round(s * N)."""
    sizes = [math.prod(s) for s in shapes]
    total_keep = sum(sizes) - round(sparsity * sum(sizes))
    raw = [(sum(s) / math.prod(s)) ** power_scale for s in shapes]
    dense: set[int] = set()
    while True:
        budget = total_keep - sum(sizes[i] for i in dense)
        weight = sum(raw[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        eps = budget / weight if weight > 0 else 0.0
        over = [i for i in range(len(sizes)) if i not in dense and eps * raw[i] > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda i: raw[i]))
    exact = [float(sizes[i]) if i in dense else eps * raw[i] * sizes[i] for i in range(len(sizes))]
    counts = [min(sizes[i], math.floor(x)) for i, x in enumerate(exact)]
    order = sorted(range(len(sizes)), key=lambda i: exact[i] - counts[i], reverse=True)
    shortfall = total_keep - sum(counts)
    for i in order:
        if shortfall <= 0:
            break
        if counts[i] < sizes[i]:
            counts[i] += 1
            shortfall -= 1
    return counts


@DISTRIBUTIONS.register("erk")
def erk(scores: dict[str, torch.Tensor], sparsity: float, erk_power_scale: float = 1.0, **_) -> dict[str, torch.Tensor]:
    keep = erk_keep_counts([tuple(s.shape) for s in scores.values()], sparsity, erk_power_scale)
    return _counts_to_masks(scores, [s.numel() - k for s, k in zip(scores.values(), keep)])


def allocate(scores: dict[str, torch.Tensor], sparsity: float, distribution: str, **kwargs) -> dict[str, torch.Tensor]:
    """Keep-masks for `scores` at `sparsity` spread by the named distribution.

    Consumes `scores`: the global distribution turns them into sort keys in place, to keep its peak memory
    at one score per weight; pass copies to keep them.
    """
    return DISTRIBUTIONS.get(distribution)(scores, sparsity, **kwargs)
