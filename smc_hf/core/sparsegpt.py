"""SparseGPT (Frantar & Alistarh 2023): one layer pruned with its inputs' Hessian and OBS reconstruction.

For a layer y = W x with calibration inputs X, H = (2/n) X X^T is the Hessian of ||W X - W' X||^2 in each row.
Columns are visited left to right; a pruned weight's error is spread over the columns not yet visited with
the upper Cholesky factor U of H^-1 (U^T U = H^-1), row by row: w_{i:} -= (w_i / U_ii) U_{i, i:}. That is the
exact OBS update of the weights right of the pruned one, those left of it being already fixed.

As the reference code (`fasterprune` of IST-DASLab/sparsegpt):
- dampening: percdamp * mean(diag H) is added to the diagonal;
- dead inputs (diag H = 0: the column never saw a non-zero input) get H_ii = 1 and their weights set to 0,
  so they score 0 and are pruned first (they never change an output);
- columns in blocks of `blocksize`: each block's mask is chosen when the block is reached, by w^2 / U_qq^2 over
  the block's (rows x block) weights, the weights already carrying the updates of earlier blocks;
- N:M: within the column loop, at every M-th column, the N:M choice of the next M columns by the same score.

Unlike the reference, counts are exact: the layer loses exactly round(s * rows * columns) weights (the
reference takes int(s * size) + 1 per block when the threshold weight is included, one too many per block);
block b, covering columns [c0, c1), loses round(s * rows * c1) - round(s * rows * c0), so every block is within
one weight of its share and the layer total is exact. Math in float32; the caller writes back in its dtype.
"""

from __future__ import annotations

from typing import Optional

import torch

from .allocation import ordered_keys, prune_lowest
from .patterns import NMPattern, nm_keep_mask


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float, what: str = "layer") -> torch.Tensor:
    """U with U^T U = (H + damp I)^-1, upper triangular (H is modified in place)."""
    diag = torch.arange(hessian.shape[0], device=hessian.device)
    hessian[diag, diag] += percdamp * torch.mean(torch.diag(hessian))
    factor, info = torch.linalg.cholesky_ex(hessian)
    if int(info) == 0:
        inverse = torch.cholesky_inverse(factor)
        factor, info = torch.linalg.cholesky_ex(inverse, upper=True)
    if int(info) != 0:
        raise ValueError(
            f"SparseGPT: the input Hessian of {what} is not positive definite after dampening with percdamp = "
            f"{percdamp}; raise sparsegpt_damp (e.g. 0.1) or give more calibration samples"
        )
    return factor


def block_prune_counts(rows: int, columns: int, sparsity: float, blocksize: int) -> list[int]:
    """Weights each column block loses so that the layer loses exactly round(s * rows * columns)."""
    edges = list(range(0, columns, blocksize)) + [columns]
    return [round(sparsity * rows * b) - round(sparsity * rows * a) for a, b in zip(edges, edges[1:])]


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    pattern: Optional[NMPattern] = None,
    pruned: Optional[torch.Tensor] = None,
    what: str = "layer",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune `weight` (rows x columns, (out, in) layout) to `sparsity` with OBS reconstruction.

    `hessian`: the (columns x columns) H of the layer's inputs; consumed (modified in place).
    `pattern` (N:M): keep N of every M consecutive columns in each row instead (`sparsity` is then ignored).
    `pruned`: bool, True where a weight is already pruned; those are pruned first and stay pruned.
    Returns (new weight in float32, keep-mask), the pruned weights exactly 0.
    """
    rows, columns = weight.shape
    if hessian.shape != (columns, columns):
        raise ValueError(f"{what}: Hessian of shape {tuple(hessian.shape)} for a weight with {columns} input columns")
    if blocksize < 1:
        raise ValueError(f"sparsegpt blocksize must be >= 1, got {blocksize}")
    m = pattern.m if pattern is not None else 1
    if pattern is not None:
        if columns % m or blocksize % m:
            raise ValueError(
                f"{what}: N:M groups of {m} need the input columns ({columns}) and sparsegpt_blocksize ({blocksize}) "
                f"to be multiples of {m}; leave this layer out of the selection or pick another pattern/blocksize"
            )
    w = weight.detach().float().clone()
    h = hessian.float()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    hinv = inverse_hessian_factor(h, percdamp, what)
    del h
    forced = pruned.to(w.device) if pruned is not None else None
    keep = torch.ones_like(w, dtype=torch.bool)
    counts = None if pattern is not None else block_prune_counts(rows, columns, sparsity, blocksize)
    for b, i1 in enumerate(range(0, columns, blocksize)):
        i2 = min(i1 + blocksize, columns)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d1 = torch.diag(hinv1)
        keep1 = keep[:, i1:i2]
        if pattern is None:
            score = _score(w1, d1, forced, i1, i2)
            keep1.copy_(prune_lowest([ordered_keys(score)], counts[b])[0])
        for i in range(i2 - i1):
            if pattern is not None and i % m == 0:
                score = _score(w1[:, i:i + m], d1[i:i + m], forced, i1 + i, i1 + i + m)
                keep1[:, i:i + m] = nm_keep_mask(score, pattern, -1, what)
                if forced is not None:
                    keep1[:, i:i + m] &= ~forced[:, i1 + i:i1 + i + m]
            col = w1[:, i]
            q = col * keep1[:, i]
            q1[:, i] = q
            err = (col - q) / d1[i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w, keep


def _score(w: torch.Tensor, d: torch.Tensor, forced: Optional[torch.Tensor], c0: int, c1: int) -> torch.Tensor:
    """w^2 / [H^-1 factor]_qq^2, -inf where already pruned."""
    score = w.square() / d.square().unsqueeze(0)
    if forced is not None:
        score.masked_fill_(forced[:, c0:c1], float("-inf"))
    return score
