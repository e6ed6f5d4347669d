"""Calibration passes: gradients of the task loss on a few batches, for SNIP scores and oBERT's Fisher.

Gradients come from `torch.autograd.grad` for the selected weights only, so nothing is left in `.grad` and
gradients the Trainer is accumulating are untouched. The passes run in eval mode (dropout off, mode restored
after), so a score depends on the weights and the batches alone.

Where the batches come from: a DataLoader that Accelerate prepared (the Trainer's train loader) is not
iterated itself, since a second iterator would disturb the epoch in progress and Accelerate's gradient state;
a fresh loader over the same dataset, collate function and batch size is read instead, shuffled by a seeded
generator, so every rank and every resumed run sees the same calibration batches. Any other iterable (the
dataloader given to `prune_model`) is read in its own order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Iterable, Iterator, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from .seeds import derived_seed

logger = logging.getLogger(__name__)


def calibration_seed(seed: int, round_idx: int, step: int) -> int:
    """A seed that differs between rounds and pruning steps of one run and is equal across its ranks."""
    return derived_seed(seed, round_idx * 1009 + step)


def show_progress(args) -> Optional[bool]:
    """Progress bars follow `--disable_tqdm` inside a Trainer and show on a terminal otherwise."""
    disabled = getattr(args, "disable_tqdm", None)
    return None if disabled is None else not disabled


def calibration_loader(dataloader: Iterable, seed: int) -> Iterable:
    """The iterable to read calibration batches from (see the module docstring)."""
    base = getattr(dataloader, "base_dataloader", None)
    if not isinstance(base, DataLoader):
        return dataloader
    if isinstance(base.dataset, IterableDataset):
        return base
    batch_size = getattr(base.batch_sampler, "batch_size", None) or base.batch_size or 1
    return DataLoader(
        base.dataset, batch_size=batch_size, shuffle=True, collate_fn=base.collate_fn, num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def to_device(batch, device: torch.device):
    """`batch` (a tensor, or dicts / lists / tuples of them) on `device`."""
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _loss(model: nn.Module, batch) -> torch.Tensor:
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"calibration batches must be dicts of model inputs including labels, got {type(batch).__name__}"
        )
    outputs = model(**batch)
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
    if loss is None:
        raise ValueError(
            "the model returned no loss on a calibration batch; gradient-based pruning needs batches with labels"
        )
    return loss


def calibration_gradients(
    model: nn.Module,
    params: dict[str, nn.Parameter],
    dataloader: Optional[Iterable],
    count: Optional[int],
    *,
    seed: int = 0,
    masks: Optional[dict[str, torch.Tensor]] = None,
    require_all: bool = True,
    what: str = "calibration",
    progress: Optional[bool] = None,
    train_mode: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield, for each of `count` batches (None: one full pass), the float32 gradient of the loss for every
    parameter in `params`.

    `masks` (name -> bool keep-mask) zero the gradients of pruned weights. With `require_all`, fewer than
    `count` batches is an error; otherwise the batches at hand are used, with a warning.
    `progress=None` shows a bar only on a terminal. `train_mode` keeps dropout on (the release's SNIP).
    """
    if dataloader is None:
        raise ValueError(
            f"{what} needs batches of training data: pass dataloader= to prune_model (SparseTrainer passes its own)"
        )
    names = list(params)
    tensors = [params[n] for n in names]
    owned = {id(p) for p in model.parameters()}
    if any(id(t) not in owned for t in tensors):
        raise ValueError(
            f"{what}: the weights to score are not the model's own parameters (a sharded model, e.g. under FSDP2, "
            "viewed whole through copies); compute calibration gradients unsharded (DDP, one process)"
        )
    device = tensors[0].device
    frozen = [p for p in tensors if not p.requires_grad]
    was_training = model.training
    seen = 0
    try:
        for p in frozen:
            p.requires_grad_(True)
        model.train(train_mode)
        batches = calibration_loader(dataloader, seed)
        available = len(batches) if hasattr(batches, "__len__") else None
        if require_all and count is not None and available is not None and available < count:
            raise ValueError(f"{what}: the dataloader has {available} batches, {count} were asked for")
        bar = tqdm(total=count if count is not None else available, desc=what, leave=False, disable=None if progress is None else not progress)
        with bar:
            for batch in batches:
                with torch.enable_grad():
                    loss = _loss(model, to_device(batch, device))
                    grads = torch.autograd.grad(loss, tensors, allow_unused=True, materialize_grads=True)
                out = {}
                for name, grad in zip(names, grads):
                    grad = grad.detach().float()
                    if masks is not None and name in masks:
                        grad.mul_(masks[name])
                    out[name] = grad
                del loss, grads
                seen += 1
                bar.update(1)
                yield out
                if count is not None and seen == count:
                    break
    finally:
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
    if seen == 0:
        raise ValueError(f"{what}: the dataloader yielded no batches")
    if count is not None and seen < count:
        message = f"{what}: the dataloader yielded {seen} batches, {count} were asked for"
        if require_all:
            raise ValueError(message)
        logger.warning("%s; using the %d at hand", message, seen)
