"""N:M semi-structured patterns: keep exactly N of every M consecutive weights along a layer's input dimension.

Sparse tensor cores (2:4 on NVIDIA Ampere and later) skip the zeros of such a layout, which unstructured masks
cannot offer. A pattern is orthogonal to the criterion: any per-weight scores (|w|, random, SNIP, Wanda, ...)
become an N:M mask by keeping the N highest scores of each group. Groups run along the input dimension: the last
dim of an `nn.Linear` weight (out, in), dim 0 of transformers' `Conv1D` weight (in, out).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
from torch import nn

_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class NMPattern:
    """Keep `n` of every `m` consecutive weights along the input dimension (0 < n < m)."""

    n: int
    m: int

    def __post_init__(self):
        for field_name in ("n", "m"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"N:M pattern: {field_name} must be a whole number, got {value!r}")
        if not 0 < self.n < self.m:
            raise ValueError(
                f"N:M pattern {self.n}:{self.m}: N must satisfy 0 < N < M (keep N of every M weights; "
                "N = 0 would prune everything, N >= M nothing); e.g. 2:4 or 4:8"
            )

    @classmethod
    def parse(cls, text) -> "NMPattern":
        """`NMPattern` from "N:M" (e.g. "2:4"), or the pattern itself."""
        if isinstance(text, NMPattern):
            return text
        match = _PATTERN.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"N:M pattern must be written N:M with whole numbers 0 < N < M, such as 2:4 or 4:8; "
                             f"got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def sparsity(self) -> float:
        """The fraction of every group (so of every layer) that is pruned: 1 - N/M."""
        return 1.0 - self.n / self.m

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


def _conv1d_type() -> Optional[type]:
    try:  # GPT-2 style models store their projections in transformers' Conv1D, weight (in, out)
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return None
    return Conv1D


def input_dim_of(module: Optional[nn.Module], attr: str = "weight") -> int:
    """The input dimension of `module.<attr>`: 0 for transformers' Conv1D weight, else the last (nn.Linear's
    (out, in), `nn.MultiheadAttention`'s packed (3E, E) projections, any 2-D matrix picked by `targets`)."""
    conv1d = _conv1d_type()
    if conv1d is not None and isinstance(module, conv1d) and attr == "weight":
        return 0
    return -1


def input_dims(model: nn.Module, names: Iterable[str]) -> dict[str, int]:
    """`input_dim_of` for each named parameter of `model`, from the module that owns it."""
    dims = {}
    for name in names:
        owner, _, attr = name.rpartition(".")
        try:
            module = model.get_submodule(owner) if owner else model
        except AttributeError:
            module = None
        dims[name] = input_dim_of(module, attr)
    return dims


def check_shape(shape: tuple[int, ...], pattern: NMPattern, input_dim: int = -1, name: str = "weight") -> None:
    """Raise before any work when a weight cannot hold `pattern`: not a 2-D matrix, or an input dimension that
    the groups of M do not tile."""
    if len(shape) != 2:
        raise ValueError(
            f"N:M pattern {pattern}: {name} has shape {tuple(shape)}; patterns apply to 2-D weight matrices. "
            "Leave it out of the selection (SparsityConfig ignore=[regex]) or drop the pattern"
        )
    width = shape[input_dim]
    if width % pattern.m:
        raise ValueError(
            f"N:M pattern {pattern}: {name} has shape {tuple(shape)}, whose input dimension ({width}, dim "
            f"{input_dim % 2}) is not a multiple of M = {pattern.m}; leave this layer out of the selection "
            "(SparsityConfig ignore=[regex]) or pick an M that divides it"
        )


def _groups(tensor: torch.Tensor, pattern: NMPattern, input_dim: int) -> torch.Tensor:
    """A (rows * in / M, M) view-or-copy of `tensor` whose rows are the groups, input dimension last."""
    moved = tensor.movedim(input_dim, -1) if input_dim % tensor.dim() != tensor.dim() - 1 else tensor
    return moved.reshape(-1, pattern.m)


def _ungroup(groups: torch.Tensor, shape: tuple[int, ...], input_dim: int) -> torch.Tensor:
    dims = len(shape)
    if input_dim % dims == dims - 1:
        return groups.reshape(shape)
    moved = list(shape)
    moved.append(moved.pop(input_dim % dims))
    return groups.reshape(moved).movedim(-1, input_dim % dims)


def nm_keep_mask(scores: torch.Tensor, pattern: NMPattern, input_dim: int = -1, name: str = "weight") -> torch.Tensor:
    """Bool keep-mask with exactly `pattern.n` True in every group of `pattern.m` consecutive weights along
    `input_dim` (-1: nn.Linear's in; 0: Conv1D's): the N highest scores of each group.

    Ties are broken by position: among equal scores the lower input index is kept (a stable descending sort), so
    the mask is deterministic. Scores of -inf (already-pruned weights) rank lowest; NaN is an error. `name`
    names the layer in errors, which come before any work.
    """
    pattern = NMPattern.parse(pattern)
    check_shape(tuple(scores.shape), pattern, input_dim, name)
    if torch.isnan(scores).any():
        raise ValueError(f"N:M pattern {pattern}: scores of {name} contain NaN (the weights or gradients they "
                         "came from are not finite)")
    groups = _groups(scores.detach().float(), pattern, input_dim)
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices[:, : pattern.n]
    keep = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    keep.scatter_(1, order, True)
    return _ungroup(keep, tuple(scores.shape), input_dim).contiguous()


def check_nm(mask: torch.Tensor, pattern: NMPattern, input_dim: int = -1, exact: bool = True) -> torch.Tensor:
    """The groups of `mask` (True = kept / non-zero) that violate `pattern`, as an int64 tensor of shape (V, 2):
    for each, the (row, first input index) of the group in the weight's own layout, i.e. `weight[row, i:i+M]`
    for an nn.Linear and `weight[i:i+M, row]` for a Conv1D. Empty when every group holds exactly N kept weights
    (`exact`), or at most N (`exact=False`: what sparse kernels need of the weights' non-zeros, since a kept
    weight may be zero). A shape the pattern cannot tile raises."""
    pattern = NMPattern.parse(pattern)
    check_shape(tuple(mask.shape), pattern, input_dim, "mask")
    kept = _groups(mask.bool(), pattern, input_dim).sum(dim=1)
    bad = (kept != pattern.n) if exact else (kept > pattern.n)
    index = bad.nonzero().squeeze(1)
    per_row = mask.shape[input_dim] // pattern.m
    return torch.stack([index // per_row, (index % per_row) * pattern.m], dim=1)


def nm_violations(masks: dict[str, torch.Tensor], pattern: NMPattern, dims: dict[str, int],
                  exact: bool = True) -> dict[str, int]:
    """Violating groups per layer (`check_nm`), counted; a layer the pattern cannot tile counts all its groups."""
    pattern = NMPattern.parse(pattern)
    counts = {}
    for name, mask in masks.items():
        dim = dims.get(name, -1)
        try:
            counts[name] = int(check_nm(mask, pattern, dim, exact=exact).shape[0])
        except ValueError:
            counts[name] = max(1, math.ceil(mask.numel() / pattern.m))
    return counts


__all__ = ["NMPattern", "check_nm", "check_shape", "input_dim_of", "input_dims", "nm_keep_mask", "nm_violations"]
