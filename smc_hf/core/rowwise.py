"""The `per_row` distribution: every output row of a layer pruned to the target (Wanda compares weights within
a row, Sun et al. 2023).

A weight's row is its output unit; its position in the row is its input column. Scores are laid out like the
weights, with the input dimension given per tensor (`input_dims`, from `smc_hf.core.patterns.input_dims`: -1 for
nn.Linear's (out, in), 0 for GPT-2's Conv1D (in, out); default -1; tensors of more than 2 dims keep dim 0 as the
output and flatten the rest).

Exactness rule of `per_row`: every row loses exactly round(s * inputs) weights (Python's round, half to even),
so a layer loses rows * round(s * inputs), which equals round(s * rows * inputs) whenever s * inputs is whole
(any even input width at 50%) and is otherwise the nearest count a row-uniform mask can reach. Ties are
broken by position: the lower input index is pruned first, so masks are deterministic.
"""

from __future__ import annotations

from typing import Optional

import torch

from .allocation import DISTRIBUTIONS, ordered_keys


def rows_view(tensor: torch.Tensor, input_dim: int = -1) -> torch.Tensor:
    """`tensor` as (outputs, inputs) (a view or a copy; read it, do not write through it)."""
    if tensor.dim() < 2:
        return tensor.reshape(1, -1)
    if tensor.dim() == 2 and input_dim == 0:
        return tensor.t()
    return tensor.reshape(tensor.shape[0], -1)


def from_rows(rows: torch.Tensor, like: torch.Tensor, input_dim: int = -1) -> torch.Tensor:
    """Inverse of `rows_view`: back to the layout of `like`."""
    if like.dim() == 2 and input_dim == 0:
        return rows.t().contiguous()
    return rows.reshape(like.shape).contiguous()


def row_keep(scores: torch.Tensor, prune_per_row: int) -> torch.Tensor:
    """Keep-mask of a (rows, inputs) score matrix pruning the `prune_per_row` lowest of every row."""
    keys = ordered_keys(scores)
    keep = torch.ones_like(keys, dtype=torch.bool)
    if prune_per_row > 0:
        lowest = torch.sort(keys, dim=1, stable=True).indices[:, :prune_per_row]
        keep.scatter_(1, lowest, False)
    return keep


@DISTRIBUTIONS.register("per_row")
def per_row(
    scores: dict[str, torch.Tensor], sparsity: float, input_dims: Optional[dict[str, int]] = None, **_
) -> dict[str, torch.Tensor]:
    """Each output row of each layer pruned to the target: round(s * inputs) of its weights (see the module)."""
    input_dims = input_dims or {}
    masks = {}
    for name, score in scores.items():
        dim = input_dims.get(name, -1)
        rows = rows_view(score, dim)
        masks[name] = from_rows(row_keep(rows, round(sparsity * rows.shape[1])), score, dim)
    return masks
