"""Block-diagonal empirical Fisher for oBERT (Kurtic et al. 2022): saliencies and the exact OBS update.

The empirical Fisher of m gradient samples, F = damp * I + (1/m) * sum_i g_i g_i^T, is kept only in blocks of
B consecutive weights of one layer (row-major order of the flattened weight; the last block of a layer is
padded with coordinates that have no gradient, so they are decoupled and never touched).

- Saliency of weight q: w_q^2 / (2 [F^-1]_qq), the loss increase of removing q alone under the quadratic model.
- OBS update of a block whose set Q is pruned, R kept: the minimiser of (w' - w)^T F (w' - w) with w'_Q = 0,
  w'_R = w_R + F_RR^-1 F_RQ w_Q. This equals oBERT's w - F^-1[:, Q] (F^-1[Q, Q])^-1 w_Q (Schur complement), but
  solves with F itself, which is far better conditioned than its inverse when damp is small.

Memory bound: the blocks of all N selected weights are held at once, in float32: 4 * N * B bytes (BERT-base's
85M Linear weights with B = 50: 17 GB; B = 8: 2.7 GB), plus N floats for diag(F^-1) and float64 work space of at
most `chunk` blocks (8 * chunk * B^2 bytes, 80 MB for the default chunk and B = 50). Time: m * N * B
multiply-adds to accumulate, about N * B^2 to factorise and to solve.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

#: Blocks factorised together in float64; bounds the work space (see the module docstring).
CHUNK = 4096


class BlockFisher:
    """Accumulates gradient samples into per-layer (blocks, B, B) Fisher blocks, then answers oBERT's questions."""

    def __init__(self, shapes: dict[str, torch.Size], block_size: int, damp: float,
                 device: Optional[torch.device] = None, chunk: int = CHUNK):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if not damp > 0:
            raise ValueError(f"damp must be > 0, got {damp}")
        self.block_size, self.damp, self.chunk = block_size, float(damp), chunk
        self.shapes = {n: torch.Size(s) for n, s in shapes.items()}
        self.blocks = {
            n: torch.zeros(self._num_blocks(s), block_size, block_size, dtype=torch.float32, device=device)
            for n, s in self.shapes.items()
        }
        self.samples = 0
        self._inverse_diagonal: dict[str, torch.Tensor] = {}

    def _num_blocks(self, shape: torch.Size) -> int:
        return math.ceil(math.prod(shape) / self.block_size)

    def _blocked(self, name: str, tensor: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """`tensor` (shaped like the weight) as (blocks, B), zero-padded at the end."""
        flat = tensor.detach().reshape(-1).to(dtype)
        pad = self.blocks[name].shape[0] * self.block_size - flat.numel()
        return F.pad(flat, (0, pad)).view(-1, self.block_size)

    def _unblocked(self, name: str, blocked: torch.Tensor) -> torch.Tensor:
        shape = self.shapes[name]
        return blocked.reshape(-1)[: math.prod(shape)].view(shape)

    # -- building ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def add(self, grads: dict[str, torch.Tensor]) -> None:
        """Add one gradient sample (name -> gradient shaped like the weight)."""
        if self._inverse_diagonal:
            raise RuntimeError("the Fisher is finalized; build a new BlockFisher for new samples")
        for name, blocks in self.blocks.items():
            g = self._blocked(name, grads[name].to(blocks.device))
            blocks.baddbmm_(g.unsqueeze(2), g.unsqueeze(1))
        self.samples += 1

    @torch.no_grad()
    def finalize(self) -> None:
        """Average the samples, add the damping and compute diag(F^-1) block by block in float64."""
        if self.samples == 0:
            raise ValueError("the Fisher has no gradient samples")
        for name, blocks in self.blocks.items():
            blocks.div_(self.samples).diagonal(dim1=1, dim2=2).add_(self.damp)
            diag = torch.empty(blocks.shape[:2], dtype=torch.float64, device=blocks.device)
            for start in range(0, blocks.shape[0], self.chunk):
                part = blocks[start:start + self.chunk].double()
                factor, info = torch.linalg.cholesky_ex(part)
                inverse = torch.cholesky_inverse(factor)
                bad = info.nonzero().squeeze(1)
                if bad.numel():  # not positive definite in floating point: fall back to an LU inverse
                    inverse[bad] = torch.linalg.inv(part[bad])
                diag[start:start + self.chunk] = inverse.diagonal(dim1=1, dim2=2)
            self._inverse_diagonal[name] = diag

    # -- using -------------------------------------------------------------------------------------------
    def inverse_diagonal(self, name: str) -> torch.Tensor:
        """[F^-1]_qq for every weight of `name`, shaped like the weight (float64)."""
        if name not in self._inverse_diagonal:
            raise RuntimeError("call finalize() before asking for saliencies")
        return self._unblocked(name, self._inverse_diagonal[name])

    @torch.no_grad()
    def saliency(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """w^2 / (2 [F^-1]_qq), float32, shaped like the weight: higher means more worth keeping."""
        w = weight.detach().double()
        return (w * w / (2.0 * self.inverse_diagonal(name))).float()

    @torch.no_grad()
    def obs_update_(self, name: str, weight: torch.Tensor, keep: torch.Tensor) -> None:
        """Set the weights where `keep` is False to zero and move the kept ones of the same block by the OBS update."""
        blocks = self.blocks[name]
        w = self._blocked(name, weight, torch.float64)
        kept = self._blocked(name, keep.to(weight.device), torch.float64)  # padding counts as pruned
        for start in range(0, blocks.shape[0], self.chunk):
            part = slice(start, start + self.chunk)
            removed = w[part] * (1.0 - kept[part])
            if not bool(removed.any()):
                continue
            f, r = blocks[part].double(), kept[part]
            rhs = r * torch.bmm(f, removed.unsqueeze(2)).squeeze(2)  # F_RQ w_Q on R, 0 elsewhere
            system = f.mul_(r.unsqueeze(2) * r.unsqueeze(1))  # F_RR on R ...
            system.diagonal(dim1=1, dim2=2).add_(1.0 - r)  # ... and the identity elsewhere
            w[part] += torch.linalg.solve(system, rhs)
        w.mul_(kept)
        weight.copy_(self._unblocked(name, w).to(weight.dtype))

    def release(self, name: str) -> None:
        """Free the blocks of one layer once it is done with."""
        self.blocks.pop(name, None)
        self._inverse_diagonal.pop(name, None)
