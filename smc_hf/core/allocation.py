"""Where sparsity goes: turn per-weight scores into keep-masks with exact counts.

- `uniform`: every layer pruned to the target (round(s * n) weights each).
- `global`: one threshold over all selected weights, round(s * N) pruned in total.
- `erk`: Erdos-Renyi-Kernel layer densities (RigL, Evci et al. 2020), round(s * N) pruned in total.

Selection is exact and memory-bounded: the k-th smallest score is found by radix selection on the bit pattern
of the float32 scores (`smc_hf.core.radix`: one histogram pass of the top 16 bits, a second look at the one
bucket that holds the threshold), layer by layer, so no concatenation of all scores is ever built. Ties at the
threshold are broken by layer order then position, so masks are deterministic.

Scores come as a mapping name -> tensor: stored tensors (SNIP, oBERT: one float per weight), or `LayerScores`,
which computes a layer's scores when asked (magnitude, random) so that they are never held for all layers:
each selection pass recomputes them into one layer's scratch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Callable, Iterable, Iterator, Optional

import torch

from .radix import RadixSelect, keep_mask
from .registry import Registry

Distribution = Callable[..., dict[str, torch.Tensor]]
DISTRIBUTIONS: Registry[Distribution] = Registry("distribution")

_POS_INF_BITS = 0x7F800000  # float32 +inf; raw bits above it are NaN
_NEG_INF_KEY = -0x7F800001  # ordered key of float32 -inf; keys below it are NaN
#: The fused selection keeps (position, low half) of each key in the threshold's bucket, 12 bytes each, when
#: they take at most this many bytes per selected weight; otherwise it reads the keys a third time instead.
_BUCKET_BYTES_PER_WEIGHT = 0.125


class LayerScores(Mapping):
    """Scores computed one layer at a time, anew at every access, never held for all layers at once.

    `fill(name, out)` writes the float32 scores of layer `name`, flattened, into `out` (and must write the
    same numbers every time). `layer[name]` returns a fresh tensor; allocation calls `score(name, out)` with
    a reused scratch buffer instead.
    """

    compensate = None  # no weight repair: see `smc_hf.core.criteria.Scores`

    def __init__(self, shapes: dict[str, tuple[int, ...]], devices: dict[str, torch.device],
                 fill: Callable[[str, torch.Tensor], None]):
        self.shapes, self.devices, self._fill = dict(shapes), dict(devices), fill

    def numel(self, name: str) -> int:
        return math.prod(self.shapes[name])

    def score(self, name: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The scores of `name` in its shape, written into the first numel entries of `out` when given."""
        n = self.numel(name)
        flat = out.reshape(-1)[:n] if out is not None else torch.empty(n, device=self.devices[name])
        self._fill(name, flat)
        return flat.view(self.shapes[name])

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.shapes:
            raise KeyError(name)
        return self.score(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def ordered_keys(scores: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """int32 keys whose order equals the float order of `scores` (a monotone view of IEEE-754 floats).

    `inplace` writes the keys into the storage of a float32 contiguous `scores` (which is then garbage as
    floats), so that converting all scores at once costs no second copy.
    """
    scores = scores.detach().float().contiguous()
    if not inplace:
        scores = scores.clone()
    return _keys_(scores.view(-1), None).view(scores.shape)


def _keys_(flat: torch.Tensor, scratch: Optional[torch.Tensor]) -> torch.Tensor:
    """Turn flat float32 scores into their ordered int32 keys in place (`scratch`: int32, same numel or None)."""
    bits = flat.view(torch.int32)
    if bits.numel() == 0:
        return bits
    low, high = torch.aminmax(bits)
    nan = int(high) > _POS_INF_BITS
    if int(low) < 0:  # negative floats (or -0.0): flip all but the sign bit so that their order reverses
        flip = torch.bitwise_right_shift(bits, 31, out=scratch) if scratch is not None else bits >> 31
        bits.bitwise_xor_(flip.bitwise_and_(0x7FFFFFFF))
        nan = nan or int(bits.min()) < _NEG_INF_KEY
    if nan:
        raise ValueError("scores contain NaN: the weights or gradients they came from are not finite")
    return bits


class _Scratch:
    """One layer's worth of float32 and int32 scratch per device, reused by every layer and pass."""

    def __init__(self, sizes: dict[torch.device, int]):
        self.sizes, self.buffers = sizes, {}

    def get(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self.buffers:
            n = self.sizes[device]
            self.buffers[device] = (torch.empty(n, device=device), torch.empty(n, dtype=torch.int32, device=device))
        return self.buffers[device]


def _layer_scratch(scores: Mapping, names: Iterable[str]) -> _Scratch:
    sizes: dict[torch.device, int] = {}
    for name in names:
        device, n = _device_numel(scores, name)
        sizes[device] = max(sizes.get(device, 0), n)
    return _Scratch(sizes)


def _device_numel(scores: Mapping, name: str) -> tuple[torch.device, int]:
    if isinstance(scores, LayerScores):
        return torch.device(scores.devices[name]), scores.numel(name)
    return scores[name].device, scores[name].numel()


def _fresh_keys(scores: Mapping, name: str, scratch: _Scratch) -> torch.Tensor:
    """The flat keys of layer `name` in the scratch buffer, leaving stored scores untouched."""
    device, n = _device_numel(scores, name)
    floats, ints = scratch.get(device)
    if isinstance(scores, LayerScores):
        flat = scores.score(name, floats).reshape(-1)
    else:
        flat = floats[:n]
        flat.copy_(scores[name].detach().reshape(-1))
    return _keys_(flat, ints[:n])


def select_lowest(passes: Callable[[], Iterable[torch.Tensor]], k: int,
                  scratch: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> list[torch.Tensor]:
    """Flat keep-masks pruning exactly the `k` (>= 1) lowest keys over the tensors `passes()` yields (ties:
    earlier tensor, lower position).

    `passes()` must yield the same keys (flat int32, one tensor per layer) each time it is called: it is
    called two or three times, so keys can be recomputed per layer rather than held. `scratch(keys)` may give
    an int32 buffer of at least keys.numel() for the bucket arithmetic.
    """
    scratch = scratch or (lambda keys: None)
    select = RadixSelect(k)
    total = 0
    for keys in passes():
        select.add_high(keys, scratch(keys))
        total += keys.numel()
    select.find_bucket()
    if 12 * select.in_bucket <= _BUCKET_BYTES_PER_WEIGHT * total:
        # two passes: the second writes every mask outside the bucket and keeps the few keys inside it
        masks, members = [], []
        for keys in passes():
            masks.append(keys > select.bucket_max)
            positions, lows = select.bucket_members(keys, scratch(keys))
            select.add_lows(lows)
            members.append((positions, lows))
        threshold, ties = select.resolve()
        low = threshold & 0xFFFF
        for mask, (positions, lows) in zip(masks, members):
            mask[positions[lows > low]] = True
            equal = positions[lows == low]
            pruned = min(ties, equal.numel())
            mask[equal[pruned:]] = True
            ties -= pruned
        return masks
    for keys in passes():  # many keys share the bucket (heavy ties): count them, then a third pass
        select.add_low(keys, scratch(keys))
    threshold, ties = select.resolve()
    masks = []
    for keys in passes():
        mask, ties = keep_mask(keys, threshold, ties)
        masks.append(mask)
    return masks


def prune_lowest(keys: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Keep-masks pruning exactly the `k` lowest keys across `keys` (ties: earlier tensor, lower index)."""
    total = sum(t.numel() for t in keys)
    if not 0 <= k <= total:
        raise ValueError(f"cannot prune {k} of {total} weights")
    if k == 0:
        return [torch.ones_like(t, dtype=torch.bool) for t in keys]
    flat = [t.reshape(-1) for t in keys]
    return [m.view(t.shape) for m, t in zip(select_lowest(lambda: flat, k), keys)]


def _per_layer(scores: Mapping, prune_counts: Iterable[int]) -> dict[str, torch.Tensor]:
    """Each layer pruned to its own count, one layer's keys in scratch at a time (stored scores untouched)."""
    names = list(scores)
    scratch = _layer_scratch(scores, names)
    masks = {}
    for name, k in zip(names, prune_counts):
        device, n = _device_numel(scores, name)
        if not 0 <= k <= n:
            raise ValueError(f"cannot prune {k} of {n} weights of {name}")
        if k == 0:
            masks[name] = torch.ones(_shape(scores, name), dtype=torch.bool, device=device)
            continue
        keys, ints = _fresh_keys(scores, name, scratch), scratch.get(device)[1]
        masks[name] = select_lowest(lambda: [keys], k, lambda t: ints)[0].view(_shape(scores, name))
    return masks


def _shape(scores: Mapping, name: str) -> tuple[int, ...]:
    return scores.shapes[name] if isinstance(scores, LayerScores) else tuple(scores[name].shape)


@DISTRIBUTIONS.register("uniform")
def uniform(scores: Mapping, sparsity: float, **_) -> dict[str, torch.Tensor]:
    return _per_layer(scores, [round(sparsity * _device_numel(scores, n)[1]) for n in scores])


@DISTRIBUTIONS.register("global")
def global_(scores: Mapping, sparsity: float, **_) -> dict[str, torch.Tensor]:
    names = list(scores)
    total = sum(_device_numel(scores, n)[1] for n in names)
    k = round(sparsity * total)
    if k == 0:
        return {n: torch.ones(_shape(scores, n), dtype=torch.bool, device=_device_numel(scores, n)[0]) for n in names}
    if isinstance(scores, LayerScores):  # recomputed per layer in every pass, in one layer's scratch
        scratch = _layer_scratch(scores, names)

        def passes():
            return (_fresh_keys(scores, name, scratch) for name in names)

        def ints(keys):
            return scratch.get(keys.device)[1]
    else:  # stored scores become their keys in place, all layers at once: no second copy
        keys = [ordered_keys(scores[n], inplace=True).reshape(-1) for n in names]
        ints = None

        def passes():
            return keys
    masks = select_lowest(passes, k, ints)
    return {n: m.view(_shape(scores, n)) for n, m in zip(names, masks)}


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
def erk(scores: Mapping, sparsity: float, erk_power_scale: float = 1.0, **_) -> dict[str, torch.Tensor]:
    shapes = [_shape(scores, n) for n in scores]
    keep = erk_keep_counts(shapes, sparsity, erk_power_scale)
    return _per_layer(scores, [math.prod(s) - k for s, k in zip(shapes, keep)])


def allocate(scores: Mapping, sparsity: float, distribution: str, **kwargs) -> dict[str, torch.Tensor]:
    """Keep-masks for `scores` (stored tensors or `LayerScores`) at `sparsity` spread by the named distribution.

    Consumes stored `scores`: the global distribution turns them into sort keys in place, to keep its peak
    memory at one score per weight; pass copies to keep them.
    """
    return DISTRIBUTIONS.get(distribution)(scores, sparsity, **kwargs)
