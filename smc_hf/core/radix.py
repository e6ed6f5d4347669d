"""The exact k-th smallest of int32 keys spread over many tensors, in two histogram passes (radix selection).

Keys are int32 whose order is the order of the scores (`smc_hf.core.allocation.ordered_keys`). Pass 1 counts
the top 16 bits of every key into one table of 65536 buckets; the bucket that holds the k-th smallest key
follows from the running counts. Pass 2 looks again only at the keys inside that bucket and counts their low
16 bits, which gives the k-th key exactly. Each pass reads every key once; besides the caller's keys the
selection holds two int64 tables (1 MiB). The keys may be produced anew for each pass (recomputed from the
weights, read again from disk), so they never have to be held all at once:

    select = RadixSelect(k)
    for keys in layers():        # pass 1
        select.add_high(keys)
    select.find_bucket()
    for keys in layers():        # pass 2
        select.add_low(keys)
    threshold, ties = select.resolve()
    # prune every key < threshold and the first `ties` keys == threshold, in the caller's tie order
    # (smc_hf: layer order, then position): `keep_mask` does it one tensor at a time, in that order.

Plain torch, any device: nothing here knows about models or files.
"""

from __future__ import annotations

from typing import Optional

import torch

BUCKETS = 1 << 16
_HALF = 1 << 15


def high_buckets(keys: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The bucket of each key, (key >> 16) + 32768 in [0, 65536), as int32 (into `out`, same numel, if given)."""
    flat = keys.reshape(-1)
    out = torch.bitwise_right_shift(flat, 16, out=out) if out is not None else flat >> 16
    return out.add_(_HALF)


class RadixSelect:
    """The k-th smallest of int32 keys seen in two passes (see the module docstring for the protocol)."""

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"k = {k}: the k-th smallest key needs k >= 1 (pruning nothing needs no threshold)")
        self.k = k
        self.high = None  # int64[65536], created on the device of the first keys
        self.low = None
        self.bucket: Optional[int] = None
        self.below = 0  # keys in buckets under `bucket`
        self.in_bucket = 0  # keys in `bucket`

    # -- pass 1 --------------------------------------------------------------------------------------------
    def add_high(self, keys: torch.Tensor, scratch: Optional[torch.Tensor] = None) -> None:
        """Count the top 16 bits of `keys`; `scratch` (int32, at least keys.numel()) avoids an allocation."""
        if keys.numel() == 0:
            return
        out = scratch.reshape(-1)[:keys.numel()] if scratch is not None else None
        counts = torch.bincount(high_buckets(keys, out), minlength=BUCKETS)
        if self.high is None:
            self.high = counts
        else:  # layers may sit on different devices: the tables stay on the first one's
            self.high += counts.to(self.high.device)

    def find_bucket(self) -> int:
        """Fix the bucket that holds the k-th smallest key (after pass 1); returns it."""
        total = int(self.high.sum()) if self.high is not None else 0
        if self.k > total:
            raise ValueError(f"cannot prune {self.k} of {total} weights")
        cumulative = torch.cumsum(self.high, 0)
        self.bucket = int(torch.searchsorted(cumulative, self.k))
        self.below = int(cumulative[self.bucket - 1]) if self.bucket > 0 else 0
        self.in_bucket = int(self.high[self.bucket])
        self.low = torch.zeros(BUCKETS, dtype=torch.int64, device=self.high.device)
        return self.bucket

    @property
    def bucket_max(self) -> int:
        """The largest key the bucket can hold: every key above it is kept."""
        return ((self.bucket - _HALF) << 16) | 0xFFFF

    # -- pass 2 --------------------------------------------------------------------------------------------
    def bucket_members(self, keys: torch.Tensor, scratch: Optional[torch.Tensor] = None):
        """(positions, low 16 bits) of the keys of `keys` (flattened) that lie in the bucket, positions ascending."""
        flat = keys.reshape(-1)
        out = scratch.reshape(-1)[:flat.numel()] if scratch is not None else None
        high = torch.bitwise_right_shift(flat, 16, out=out) if out is not None else flat >> 16
        positions = (high == self.bucket - _HALF).nonzero().squeeze(1)
        return positions, flat[positions].bitwise_and_(0xFFFF)

    def add_lows(self, lows: torch.Tensor) -> None:
        """Count low halves already taken from the bucket (by `bucket_members`)."""
        if lows.numel():
            self.low += torch.bincount(lows, minlength=BUCKETS).to(self.low.device)

    def add_low(self, keys: torch.Tensor, scratch: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Count the low 16 bits of the keys in the bucket; returns those low halves, in position order (a
        caller that must know each tensor's ties before writing, e.g. out of order, can keep their counts)."""
        lows = self.bucket_members(keys, scratch)[1]
        self.add_lows(lows)
        return lows

    def resolve(self) -> tuple[int, int]:
        """(threshold, ties): the k-th smallest key, and how many keys equal to it are pruned (the first ones
        in tie order); every key below it is pruned too."""
        cumulative = self.below + torch.cumsum(self.low, 0)
        low = int(torch.searchsorted(cumulative, self.k))
        under = int(cumulative[low - 1]) if low > 0 else self.below
        return ((self.bucket - _HALF) << 16) | low, self.k - under


def keep_mask(keys: torch.Tensor, threshold: int, ties: int) -> tuple[torch.Tensor, int]:
    """Keep-mask of `keys`: keys above `threshold`, and those equal to it beyond the first `ties` (in position
    order). Returns the mask and the ties left to prune in later tensors."""
    if ties == 0:
        return keys >= threshold, 0
    keep = keys > threshold
    equal = (keys == threshold).reshape(-1).nonzero().squeeze(1)
    pruned = min(ties, equal.numel())
    keep.view(-1)[equal[pruned:]] = True
    return keep, ties - pruned
