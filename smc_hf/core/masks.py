"""`MaskSet`: the bool keep-masks of the selected weights, and the one place that applies them.

Masks hold `True` where a weight is kept; they take one byte per selected weight and no copy of the
weights is ever made. A parameter without a mask is dense. Application is in place and idempotent, so it
is safe to repeat after a skipped optimizer step.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from typing import Iterable, Iterator, Optional

import torch
from torch import nn

from ..io.mask_file import MASKS_FILE, read_masks, save_masks
from .mask_names import mask_renaming, model_prefix
from .selection import select_parameters
from .zeros import count_pruned, count_zeros, total_pruned


def _mul_(tensors: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    if not tensors:
        return
    try:
        torch._foreach_mul_(tensors, masks)
    except (RuntimeError, TypeError):  # mixed devices or dtypes: fall back to one kernel per tensor
        for tensor, mask in zip(tensors, masks):
            tensor.mul_(mask)


def unwrap_optimizer(optimizer):
    """The torch optimizer that owns `.state` under Accelerate's (possibly nested) wrappers."""
    while getattr(optimizer, "optimizer", None) is not None and optimizer.optimizer is not optimizer:
        optimizer = optimizer.optimizer
    return optimizer


#: torch optimizers whose update of a weight reads only that weight, its gradient and its own state. A
#: masked (zero) gradient on a zero weight with zero state leaves all three exactly zero (weight decay
#: multiplies zero), so with gradients masked before every step their post-step masking is needed only
#: when masks change. Optimizers that mix entries (Muon, Shampoo, ...) are not listed and get it every step.
ELEMENTWISE_OPTIMIZERS = frozenset({"SGD", "Adam", "AdamW", "Adagrad", "Adamax", "NAdam", "RAdam", "RMSprop"})


def preserves_zeros(optimizer) -> bool:
    inner = unwrap_optimizer(optimizer)
    cls = type(inner)
    return cls.__module__.startswith("torch.optim") and cls.__name__ in ELEMENTWISE_OPTIMIZERS


class MaskSet:
    """Keep-masks for a fixed, ordered set of named parameters."""

    def __init__(self, params: dict[str, nn.Parameter], base_model_prefix: str = ""):
        if not params:
            raise ValueError("a MaskSet needs at least one parameter")
        self.params: dict[str, nn.Parameter] = dict(params)
        #: The model's `base_model_prefix`: masks saved by the same body under another head load through it.
        self.base_model_prefix = base_model_prefix
        self.masks: dict[str, torch.Tensor] = {}
        #: Full (logical) shapes, which masks always have, even where a rank holds only a shard.
        self.shapes: dict[str, tuple[int, ...]] = {n: tuple(p.shape) for n, p in self.params.items()}
        #: Maps masks onto sharded weights (`smc_hf.integrations.distributed`); None where weights are whole.
        self.placement = None
        #: Changes whenever a mask is set or cleared, so derived (sharded) masks are never stale.
        self.version = 0
        #: Kept positions to zero (weights and optimizer state) at the next `apply`: connections that start anew.
        self._restart: dict[str, torch.Tensor] = {}

    @classmethod
    def for_model(cls, model: nn.Module, targets=None, ignore=None, selection: str = "default") -> "MaskSet":
        return cls(select_parameters(model, targets=targets, ignore=ignore, selection=selection), model_prefix(model))

    # -- binding ---------------------------------------------------------------------------------------
    def rebind(self, model: nn.Module) -> None:
        """Re-fetch the parameters by name, e.g. after a wrapper replaced them."""
        current = dict(model.named_parameters(remove_duplicate=False))
        missing = [n for n in self.params if n not in current]
        if missing:
            raise KeyError(f"parameters not found in the model: {missing[:5]}")
        self.params = {n: current[n] for n in self.params}

    @contextlib.contextmanager
    def whole(self, params: Optional[dict[str, nn.Parameter]] = None) -> Iterator[None]:
        """Inside, masks apply to whole tensors with no placement: the selected weights themselves or, with
        `params`, stand-ins for them under the same names and full shapes (gathered copies of sharded weights)."""
        if params is not None:
            wrong = sorted(set(params) ^ set(self.params)) or [
                n for n, p in params.items() if tuple(p.shape) != self.shapes[n]
            ]
            if wrong:
                raise ValueError(f"stand-ins must have the selected weights' names and full shapes; {wrong[:5]} do not")
        saved = self.params, self.placement
        if params is not None:
            self.params = {n: params[n] for n in self.params}
        self.placement = None
        try:
            yield
        finally:
            self.params, self.placement = saved

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    @property
    def is_dense(self) -> bool:
        return not self.masks

    # -- reading ---------------------------------------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of every selected weight, in selection order."""
        return iter(self.params.items())

    def masked(self) -> Iterator[tuple[str, nn.Parameter, torch.Tensor]]:
        """(name, parameter, keep-mask) of every weight that has a mask, in the order the masks were set."""
        return ((name, self.params[name], mask) for name, mask in self.masks.items())

    def mask(self, name: str) -> Optional[torch.Tensor]:
        """The keep-mask of `name`, or None while it is dense."""
        return self.masks.get(name)

    def mask_dict(self) -> dict[str, torch.Tensor]:
        """The current keep-masks by name (the tensors themselves, not copies: do not modify them)."""
        return dict(self.masks)

    def pruned(self) -> int:
        """Weights the masks prune, over all selected weights."""
        return total_pruned(self.masks.values())

    # -- setting masks ---------------------------------------------------------------------------------
    def set(self, name: str, mask: torch.Tensor, restart: Optional[torch.Tensor] = None) -> None:
        """Replace the keep-mask of `name`. `restart` marks kept positions that start anew at the next `apply`:
        their weights and optimizer state are zeroed once (RigL's grown connections)."""
        param = self.params[name]
        if tuple(mask.shape) != self.shapes[name]:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight has {self.shapes[name]}")
        self.masks[name] = mask.to(device=param.device, dtype=torch.bool)
        if restart is not None:
            self._restart[name] = restart.to(device=param.device, dtype=torch.bool)
        self.version += 1

    def update(self, masks: dict[str, torch.Tensor]) -> None:
        for name, mask in masks.items():
            self.set(name, mask)

    def clear(self) -> None:
        self.masks.clear()
        self._restart.clear()
        self.version += 1

    # -- applying --------------------------------------------------------------------------------------
    def _pairs(self, tensors: Iterable[tuple[str, Optional[torch.Tensor]]]):
        out_t, out_m = [], []
        for name, tensor in tensors:
            mask = self.masks.get(name)
            if tensor is not None and mask is not None:
                out_t.append(tensor)
                out_m.append(mask)
        return out_t, out_m

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        if self.placement is not None:
            return self.placement.apply_to_weights(self)
        _mul_(*self._pairs((n, p.data) for n, p in self.params.items()))

    @torch.no_grad()
    def apply_to_grads(self) -> None:
        if self.placement is not None:
            return self.placement.apply_to_grads(self)
        _mul_(*self._pairs((n, p.grad) for n, p in self.params.items()))

    @torch.no_grad()
    def apply_to_optimizer(self, optimizer) -> None:
        """Zero every per-weight optimizer buffer (Adam moments, momentum) at pruned positions."""
        if self.placement is not None:
            return self.placement.apply_to_optimizer(self, optimizer)
        if optimizer is None or self.is_dense:
            return
        state = unwrap_optimizer(optimizer).state
        tensors, masks = [], []
        for name, mask in self.masks.items():
            param_state = state.get(self.params[name])
            if not param_state:
                continue
            for value in param_state.values():
                if torch.is_tensor(value) and value.shape == mask.shape:
                    tensors.append(value)
                    masks.append(mask)
        _mul_(tensors, masks)

    def apply(self, optimizer=None) -> None:
        """Mask weights and optimizer state, and zero the positions marked to restart (see `set`)."""
        self.apply_to_weights()
        self.apply_to_optimizer(optimizer)
        if self._restart:
            self._zero_restarts(optimizer)

    @torch.no_grad()
    def _zero_restarts(self, optimizer) -> None:
        restart, self._restart = self._restart, {}
        if self.placement is not None:  # through the placement: apply once more with the restarts masked out
            final = {name: self.masks[name] for name in restart}
            self.masks.update({name: final[name] & ~positions for name, positions in restart.items()})
            self.version += 1
            try:
                self.apply_to_weights()
                self.apply_to_optimizer(optimizer)
            finally:
                self.masks.update(final)
                self.version += 1
            return
        state = unwrap_optimizer(optimizer).state if optimizer is not None else {}
        for name, positions in restart.items():
            param = self.params[name]
            param.data.masked_fill_(positions, 0.0)
            for value in (state.get(param) or {}).values():
                if torch.is_tensor(value) and value.shape == positions.shape:
                    value.masked_fill_(positions, 0)

    # -- statistics ------------------------------------------------------------------------------------
    def mask_zeros(self) -> dict[str, int]:
        return {n: count_pruned(m) for n, m in self.masks.items()}

    @torch.no_grad()
    def weight_zeros(self) -> dict[str, int]:
        """Zeros counted in the weights themselves: the honest measure of achieved sparsity."""
        if self.placement is not None:
            return self.placement.weight_zeros(self)
        return {n: count_zeros(p) for n, p in self.params.items()}

    def achieved_sparsity(self) -> float:
        return sum(self.weight_zeros().values()) / self.numel()

    def digest(self) -> str:
        """A hash of the masks, equal on every rank that holds the same masks."""
        h = hashlib.sha256()
        for name in self.names:
            mask = self.masks.get(name)
            h.update(name.encode())
            h.update(b"dense" if mask is None else mask.cpu().numpy().tobytes())
        return h.hexdigest()

    # -- (de)serialisation -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.detach().cpu().contiguous() for n, m in self.masks.items()}

    def load_state_dict(self, masks: dict[str, torch.Tensor], source: str = "masks") -> None:
        """Set masks by parameter name, mapped as transformers maps weights (`smc_hf.core.mask_names`): a
        PEFT-wrapped name and its plain form, a bare model's name and its task model's (`base_model_prefix`)
        name the same weight; masks of a source task head this model lacks are left out with a log line.

        The set must cover every selected weight (or none, for a dense run): a partial set would let the
        uncovered layers train dense without a word. Layers meant to stay dense are left out of the
        selection with `ignore` (or `targets`), so the selection says it, not a missing entry.
        """
        renaming = mask_renaming(masks, self.params, self.base_model_prefix).check(source)
        masks = {renaming.renamed[n]: m for n, m in masks.items() if n in renaming.renamed}
        for name, mask in masks.items():
            if tuple(mask.shape) != self.shapes[name]:
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight has {self.shapes[name]}")
        missing = [n for n in self.params if n not in masks]
        if masks and missing:
            raise ValueError(
                f"{source} covers {len(masks)} of the {len(self.params)} selected weights; no mask for "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}. Those layers would train dense. Use the mask "
                "file that matches this selection, or say which layers stay dense by leaving them out of it "
                "(SparsityConfig ignore=[regex, ...] or targets=[...])"
            )
        self.masks.clear()
        self._restart.clear()
        self.update(masks)

    def save(self, path: str) -> None:
        """Write the masks as bool safetensors, atomically (a partial file is never left under `path`)."""
        save_masks(self.state_dict(), path, packed=False)

    def load(self, path: str) -> None:
        """Read a mask file, bool or bit-packed (see `smc_hf.io.mask_file.read_masks`)."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no sparsity masks at {path}")
        self.load_state_dict(read_masks(path), source=path)


def load_masks(folder: str, masks: MaskSet) -> Optional[str]:
    """Load `folder`'s masks file into `masks`; returns its path, or None when the folder has none."""
    path = os.path.join(folder, MASKS_FILE)
    if os.path.isfile(path):
        masks.load(path)
        return path
    return None
