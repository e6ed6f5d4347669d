"""Layer-wise calibration: gather the input statistics of the selected layers and prune them, block by block.

Models built as a stack of blocks (decoders' `model.layers`, encoders' `encoder.layer`, GPT-2's `h`) are
pruned in order, holding one block's inputs at a time, as SparseGPT's reference code and llm-compressor's
sequential pipeline do:

1. one forward pass per calibration batch up to the first block, stopped there by a hook that records the
   block's positional and keyword inputs (hidden states, attention mask, position embeddings, ...);
2. for each block: run it on the recorded inputs with hooks on its selected layers (statistics), prune those
   layers (`prune_group`), run the pruned block again: its outputs are the next block's hidden states.

Later blocks thus see the outputs of the pruned earlier ones. Memory: the model, one block's inputs for all
calibration batches, and the statistics of one block's layers (SparseGPT: columns^2 floats per layer).
Every block gets the keyword inputs recorded at the first one, so a model whose blocks are given different
masks (alternating sliding-window layers) must use the one-pass path (`sequential=False`).

Without such a stack (or with selected layers outside it, e.g. both stacks of an encoder-decoder), one pass of
the whole model gathers every layer's statistics, then all are pruned at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import nn

from .activations import ActivationRecorder
from .calibration import to_device

logger = logging.getLogger(__name__)

PruneGroup = Callable[[dict[str, torch.Tensor]], None]


class _StopForward(Exception):
    """Raised by the capture hook to end a forward pass at the first block."""


def find_blocks(model: nn.Module, layer_names: Iterable[str]) -> Optional[tuple[str, nn.ModuleList]]:
    """(path, list) of the block stack holding every named layer: among `nn.ModuleList`s whose children are all
    of one class and contain all the layers, the longest (the outermost on ties); None if there is none."""
    layer_names = list(layer_names)
    best = None
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0 or len({type(c) for c in module}) != 1:
            continue
        prefix = f"{path}." if path else ""
        inside = all(
            n.startswith(prefix) and n[len(prefix):].split(".", 1)[0].isdigit() and "." in n[len(prefix):]
            for n in layer_names
        )
        if inside and (best is None or len(module) > len(best[1])):
            best = (path, module)
    return best


def block_index(layer: str, path: str) -> int:
    prefix = f"{path}." if path else ""
    return int(layer[len(prefix):].split(".", 1)[0])


def token_mask(batch) -> Optional[torch.Tensor]:
    """The batch's 0/1 `attention_mask` as bool (True = real token), or None when it has none of that kind."""
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    if not torch.is_tensor(mask) or mask.dim() > 3 or mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
        return None
    return mask.bool()


def examples_in(batch) -> int:
    """Examples in a batch: the first dimension of its first tensor."""
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else [batch]
    for value in values:
        if torch.is_tensor(value) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def calibration_batches(batches: Iterable, samples: Optional[int], what: str) -> Iterator:
    """Batches from `batches` until `samples` examples were read (None: all); fewer is a warning, none an error."""
    seen = 0
    for batch in batches:
        if not isinstance(batch, Mapping):
            raise TypeError(f"{what}: calibration batches must be dicts of model inputs, got {type(batch).__name__}")
        yield batch
        seen += examples_in(batch)
        if samples is not None and seen >= samples:
            return
    if seen == 0:
        raise ValueError(f"{what}: the calibration dataloader yielded no batches")
    if samples is not None:
        logger.warning("%s: the calibration data has %d examples, %d were asked for; using those at hand",
                       what, seen, samples)


@contextmanager
def inference(model: nn.Module):
    """Eval mode, no gradients and no KV cache while calibrating; the model's mode and config restored after."""
    was_training = model.training
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    if use_cache:
        config.use_cache = False
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        if use_cache:
            config.use_cache = use_cache


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _forward(model: nn.Module, batch) -> None:
    model(**batch)


def one_pass(model: nn.Module, modules: dict[str, nn.Module], batches: Iterable, kind: str,
             prune_group: PruneGroup) -> None:
    """Statistics of every layer from whole-model forward passes, then one `prune_group` call for all."""
    device = _device(model)
    recorder = ActivationRecorder(modules, kind)
    with inference(model), recorder:
        for batch in batches:
            batch = to_device(batch, device)
            recorder.token_mask = token_mask(batch)
            _forward(model, batch)
    prune_group({name: stats.value() for name, stats in recorder.stats.items()})


def capture_inputs(model: nn.Module, block: nn.Module, batches: Iterable, where: str) -> list[tuple]:
    """(args, kwargs, token mask) of `block`'s call in each batch's forward pass, stopped at the block."""
    device = _device(model)
    captured: list[tuple] = []

    def hook(module, args, kwargs):
        captured.append((args, kwargs))
        raise _StopForward

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    masks = []
    try:
        for batch in batches:
            batch = to_device(batch, device)
            try:
                _forward(model, batch)
            except _StopForward:
                pass
            else:
                raise RuntimeError(f"the forward pass never reached {where}; prune with sequential calibration off")
            masks.append(token_mask(batch))
    finally:
        handle.remove()
    return [(args, kwargs, mask) for (args, kwargs), mask in zip(captured, masks)]


def _hidden(output, where: str) -> torch.Tensor:
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    raise TypeError(f"{where} returned {type(output).__name__}; sequential calibration needs the hidden states "
                    "(a tensor, or a tuple starting with one); prune with sequential calibration off")


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor, where: str) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden}
    raise TypeError(f"{where} takes its hidden states neither first nor as hidden_states=; prune with "
                    "sequential calibration off")


def block_by_block(model: nn.Module, path: str, blocks: nn.ModuleList, modules: dict[str, nn.Module],
                   batches: Iterable, kind: str, prune_group: PruneGroup) -> None:
    """The sequential pipeline of the module docstring: one `prune_group` call per block holding selected layers."""
    by_block: dict[int, dict[str, nn.Module]] = {}
    for name, module in modules.items():
        by_block.setdefault(block_index(name, path), {})[name] = module
    last = max(by_block)
    with inference(model):
        inputs = capture_inputs(model, blocks[0], batches, f"{path}.0")
        for i in range(last + 1):
            block, where = blocks[i], f"{path}.{i}"
            if i in by_block:
                recorder = ActivationRecorder(by_block[i], kind)
                with recorder:
                    for args, kwargs, mask in inputs:
                        recorder.token_mask = mask
                        block(*args, **kwargs)
                stats = {name: s.value() for name, s in recorder.stats.items()}
                del recorder
                prune_group(stats)
                del stats
            if i < last:
                for j, (args, kwargs, mask) in enumerate(inputs):
                    hidden = _hidden(block(*args, **kwargs), where)
                    inputs[j] = (*_with_hidden(args, kwargs, hidden, where), mask)
        del inputs


def prune_layerwise(model: nn.Module, modules: dict[str, nn.Module], batches: Iterable, kind: str,
                    prune_group: PruneGroup, sequential: bool = True) -> str:
    """Gather `kind` statistics ("gram" or "norms") of `modules` and prune them with `prune_group`, block by
    block where the model has a block stack holding them all and `sequential`, else in one pass.
    Returns "sequential" or "one pass": the path taken."""
    found = find_blocks(model, modules) if sequential else None
    if found is None:
        if sequential:
            logger.info("no block stack holds every selected layer; calibrating in one pass of the whole model")
        one_pass(model, modules, batches, kind, prune_group)
        return "one pass"
    block_by_block(model, *found, modules, batches, kind, prune_group)
    return "sequential"
