"""Masks that stay exact on every backend Accelerate drives: which tensors really hold a weight, and
agreement of masks across ranks.

Masks are kept at each parameter's full (logical) shape and are identical on every rank. A *placement*
maps them onto what this rank holds, so masking a sharded model multiplies shards, never stale copies:

- replicated (one process, DDP, multi-CPU): the parameters themselves; no placement object is needed.
- DTensor parameters (FSDP2 `fully_shard`, tensor parallel): each mask is cut with the parameter's own
  device mesh and placements; optimizer moments are DTensors with the same layout.
- FSDP1 with `use_orig_params=True`: parameters are views into this rank's flat shard, whose offsets
  FSDP does not publish; the local part of each mask is read back through FSDP's own writeback.
- DeepSpeed ZeRO-1/2/3: `Trainer.optimizer.step()` is a no-op, the engine steps inside `backward`, and
  fp32 master weights overwrite the model's half-precision copy. Masks therefore enter as gradient hooks
  (pruned positions receive a zero gradient before DeepSpeed reduces it, so masters and Adam moments,
  zeroed through `deepspeed.utils.safe_set_*` when the mask is set, never move), so the half-precision
  weights copied from them stay zero. ZeRO-3 uses the local (per-partition) helpers.

Between mask changes nothing is re-masked after a step when the optimizer keeps zeros by itself
(`step_keeps_pruned_zero`); otherwise weights and optimizer state are re-masked after every step.

Mask changes (scoring and allocation) run inside `mask_update`, where every selected weight is whole and
the masks apply to whole tensors. On leaving it, with several processes, the masks of all ranks are compared
by digest and, if they differ, replaced by rank 0's (`accelerate.utils.gather_object` / `broadcast`, never raw
`torch.distributed`). Local masks are cut again when next needed: `MaskSet.version` tells when they are stale.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Iterator, Optional

import torch
from torch import nn

from ..core.masks import MaskSet, _mul_, preserves_zeros, unwrap_optimizer
from ..core.zeros import count_pruned
from ._deepspeed_private import partition, partition_group, zero_stage

logger = logging.getLogger(__name__)


# -- processes ---------------------------------------------------------------------------------------------
def _state():
    from accelerate import PartialState

    return PartialState()


def num_processes() -> int:
    return _state().num_processes


def process_index() -> int:
    return _state().process_index


def masks_digests(masks: MaskSet) -> list[str]:
    """The digest of every rank's masks, in rank order (a collective: every rank must call it)."""
    from accelerate.utils import gather_object

    return list(gather_object([masks.digest()]))


def check_masks_agree(masks: MaskSet) -> None:
    """Raise naming the ranks whose masks differ from rank 0's (a collective)."""
    digests = masks_digests(masks)
    differ = [rank for rank, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise RuntimeError(f"sparsity masks differ between ranks: ranks {differ} disagree with rank 0")


def broadcast_masks(masks: MaskSet, from_process: int = 0) -> None:
    """Give every rank the masks of `from_process` (a collective), in one packed uint8 broadcast."""
    from accelerate.utils import broadcast, broadcast_object_list

    names = broadcast_object_list([sorted(masks.mask_dict())], from_process=from_process)[0]
    selected = set(masks.names)
    unknown = [n for n in names if n not in selected]
    if unknown:
        raise ValueError(f"rank {from_process} has masks for parameters this rank does not select: {unknown[:5]}")
    shapes = [masks.shapes[n] for n in names]
    device = _state().device
    if names and process_index() == from_process:
        packed = torch.cat([masks.mask(n).reshape(-1).to(device=device, dtype=torch.uint8) for n in names])
    else:
        packed = torch.zeros(sum(math.prod(s) for s in shapes), dtype=torch.uint8, device=device)
    if names:
        packed = broadcast(packed, from_process=from_process)
    chunks = packed.split([math.prod(s) for s in shapes])
    masks.clear()
    masks.update({n: chunk.view(shape).bool() for n, chunk, shape in zip(names, chunks, shapes)})


# -- placements --------------------------------------------------------------------------------------------
class Placement:
    """Maps full-shape masks onto the tensors one rank holds (whole weights need none: `placement_for`)."""

    name = ""
    #: Whether dense gradients are in `.grad` in `on_pre_optimizer_step` (not under DeepSpeed).
    grads_before_step = True

    def __init__(self, model: nn.Module):
        self.model = model

    def attach(self, masks: MaskSet) -> None:
        masks.placement = self

    @contextlib.contextmanager
    def bind_view(self) -> Iterator[None]:
        """Whole weights under their clean names, while masks are bound (selection needs real shapes)."""
        yield

    @contextlib.contextmanager
    def full_view(self, masks: MaskSet, grads: bool = False) -> Iterator[None]:
        """Every selected weight whole (and its gradient, with `grads`) while inside."""
        yield

    def apply_to_weights(self, masks: MaskSet) -> None:
        raise NotImplementedError

    def apply_to_grads(self, masks: MaskSet) -> None:
        raise NotImplementedError

    def apply_to_optimizer(self, masks: MaskSet, optimizer) -> None:
        raise NotImplementedError

    def weight_zeros(self, masks: MaskSet) -> dict[str, int]:
        """Zeros per selected weight without a collective (reports run on one rank): pruned positions are
        checked to be exactly zero in this rank's shard and counted from the mask."""
        bad = [n for n, (weight, keep) in self.local_weight_pairs(masks) if bool(weight[~keep].any())]
        if bad:
            raise RuntimeError(f"pruned weights are not zero in this rank's shard of {bad[:5]}")
        return {n: count_pruned(m) if (m := masks.mask(n)) is not None else 0 for n in masks.names}

    def local_weight_pairs(self, masks: MaskSet) -> list[tuple[str, tuple[torch.Tensor, torch.Tensor]]]:
        """(name, (the weight tensor this rank holds, its local keep-mask)) for every masked weight."""
        return []


class _LocalMasks(Placement):
    """A placement whose local masks are cut from the full ones and cached until the masks change."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._local: dict[str, torch.Tensor] = {}
        self._version = None

    def local_masks(self, masks: MaskSet) -> dict[str, torch.Tensor]:
        if self._version != masks.version:
            self._local = self._cut(masks)
            self._version = masks.version
        return self._local

    def _cut(self, masks: MaskSet) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _local_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def local_parameters(self, masks: MaskSet) -> Iterator[tuple[str, nn.Parameter, torch.Tensor]]:
        """(name, parameter, its local keep-mask) for every masked weight."""
        local = self.local_masks(masks)
        return ((name, param, local[name]) for name, param, _ in masks.masked())

    def local_weight_pairs(self, masks: MaskSet):
        return [(n, (self._local_tensor(p.data), m)) for n, p, m in self.local_parameters(masks)]

    @torch.no_grad()
    def apply_to_weights(self, masks: MaskSet) -> None:
        pairs = [pair for _, pair in self.local_weight_pairs(masks)]
        _mul_([t for t, _ in pairs], [m for _, m in pairs])

    @torch.no_grad()
    def apply_to_grads(self, masks: MaskSet) -> None:
        tensors, local_masks = [], []
        for _, param, mask in self.local_parameters(masks):
            if param.grad is not None:
                tensors.append(self._local_tensor(param.grad))
                local_masks.append(mask)
        _mul_(tensors, local_masks)

    @torch.no_grad()
    def apply_to_optimizer(self, masks: MaskSet, optimizer) -> None:
        if optimizer is None or masks.is_dense:
            return
        state = unwrap_optimizer(optimizer).state
        tensors, local_masks = [], []
        for _, param, mask in self.local_parameters(masks):
            for value in (state.get(param) or {}).values():
                if torch.is_tensor(value):
                    value = self._local_tensor(value)
                    if value.shape == mask.shape:
                        tensors.append(value)
                        local_masks.append(mask)
        _mul_(tensors, local_masks)


class DTensorPlacement(_LocalMasks):
    """FSDP2 (and tensor-parallel) DTensor parameters: local masks cut by each parameter's mesh and placements.

    In the full view the selected parameters are replaced, inside the `MaskSet` only, by plain full-size copies
    (one all-gather each), so criteria and allocation see ordinary tensors; what the method wrote into them
    is copied back into the local shards on leaving. The cost: while a mask may change, every rank holds the
    selected weights whole once more (their gradients too, for methods that read them before the step).
    """

    name = "dtensor"

    def _cut(self, masks: MaskSet) -> dict[str, torch.Tensor]:
        from torch.distributed.tensor import distribute_tensor

        local = {}
        for name, param, mask in masks.masked():
            cut = distribute_tensor(mask.to(torch.uint8), param.device_mesh, param.placements, src_data_rank=None)
            local[name] = cut.to_local().bool()
        return local

    def _local_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to_local() if hasattr(tensor, "to_local") else tensor

    @contextlib.contextmanager
    def full_view(self, masks: MaskSet, grads: bool = False) -> Iterator[None]:
        from torch.distributed.tensor import distribute_tensor

        real = dict(masks.named_parameters())
        full = {}
        for name, param in real.items():
            copy = nn.Parameter(param.detach().full_tensor(), requires_grad=param.requires_grad)
            if grads and param.grad is not None:
                copy.grad = param.grad.full_tensor()
            full[name] = copy
        with masks.whole(full):
            yield
        with torch.no_grad():
            for name, param in real.items():
                shard = distribute_tensor(
                    full[name].detach(), param.device_mesh, param.placements, src_data_rank=None
                )
                param.to_local().copy_(shard.to_local())


class FSDP1Placement(_LocalMasks):
    """FSDP1 with `use_orig_params=True`: parameters are views of this rank's part of a flat shard.

    The full view is `summon_full_params(writeback=True)`, where the same parameter objects hold whole
    tensors under their clean names. Local masks are read back through the same writeback: the masks are
    written into the whole weights, the shard views then hold this rank's part of them, and the shard's own
    values are restored from a copy (one extra gather per mask change, none per step).
    """

    name = "fsdp1"

    def _fsdp(self):
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel

    @contextlib.contextmanager
    def bind_view(self) -> Iterator[None]:
        with self._fsdp().summon_full_params(self.model, writeback=False):
            yield

    @contextlib.contextmanager
    def full_view(self, masks: MaskSet, grads: bool = False) -> Iterator[None]:
        with self._fsdp().summon_full_params(self.model, writeback=True, with_grads=grads), masks.whole():
            yield

    @torch.no_grad()
    def _cut(self, masks: MaskSet) -> dict[str, torch.Tensor]:
        masked = list(masks.masked())
        saved = [param.detach().clone() for _, param, _ in masked]
        with self._fsdp().summon_full_params(self.model, writeback=True):
            for _, param, mask in masked:
                param.data.copy_(mask)
        local = {name: param.detach() != 0 for name, param, _ in masked}
        for (_, param, _), values in zip(masked, saved):
            param.data.copy_(values)
        return local


class DeepSpeedPlacement(_LocalMasks):
    """DeepSpeed ZeRO-1/2 (`stage3=False`) or ZeRO-3: see the module docstring.

    ZeRO-1/2 keep whole half-precision weights on every rank; their fp32 masters are written, when a mask
    is set, through `safe_get/set_full_fp32_param` (one all-reduce per weight, only then). ZeRO-3 partitions
    every weight into equal slices of its flattened form (zero-padded at the end); a rank's slice of a mask
    is cut the same way and applied through `safe_get/set_local_fp32_param` and the local optimizer-state
    helpers, with no communication.
    """

    name = "deepspeed"
    grads_before_step = False

    def __init__(self, model: nn.Module, stage3: bool):
        super().__init__(model)
        self.stage3 = stage3
        self.name = "deepspeed-zero3" if stage3 else "deepspeed-zero1/2"
        self._hooks: list = []
        self._synced = None

    def attach(self, masks: MaskSet) -> None:
        super().attach(masks)
        for handle in self._hooks:
            handle.remove()
        self._hooks = [
            param.register_hook(self._grad_hook(masks, name))
            for name, param in masks.named_parameters()
            if param.requires_grad
        ]

    def _grad_hook(self, masks: MaskSet, name: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            mask = masks.mask(name)  # looked up at call time: a changed mask is never stale
            if mask is None:
                return grad
            if grad.shape == mask.shape:
                return grad * mask
            return grad * self.local_masks(masks)[name].view(grad.shape)

        return hook

    def _partition(self, param) -> tuple[int, int]:
        from deepspeed import comm

        group = partition_group(param)
        return comm.get_rank(group=group), comm.get_world_size(group=group)

    def _cut(self, masks: MaskSet) -> dict[str, torch.Tensor]:
        if not self.stage3:
            return masks.mask_dict()
        local = {}
        for name, param, mask in masks.masked():
            size = partition(param).numel()
            rank, world = self._partition(param)
            flat = torch.zeros(size * world, dtype=torch.bool, device=mask.device)
            flat[: mask.numel()] = mask.reshape(-1)
            local[name] = flat[rank * size : (rank + 1) * size]
        return local

    def local_weight_pairs(self, masks: MaskSet):
        if self.stage3:
            return [(n, (partition(p).data.view(-1), m)) for n, p, m in self.local_parameters(masks)]
        return [(n, (p.data, m)) for n, p, m in self.local_parameters(masks)]

    @contextlib.contextmanager
    def bind_view(self) -> Iterator[None]:
        if not self.stage3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
            yield

    @contextlib.contextmanager
    def full_view(self, masks: MaskSet, grads: bool = False) -> Iterator[None]:
        if not self.stage3:
            with masks.whole():
                yield
            return
        import deepspeed

        params = [param for _, param in masks.named_parameters()]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0), masks.whole():
            yield

    def apply_to_grads(self, masks: MaskSet) -> None:
        """Gradients were masked by the hooks before DeepSpeed reduced them; nothing is left in `.grad`."""

    @torch.no_grad()
    def apply_to_optimizer(self, masks: MaskSet, optimizer) -> None:
        """Zero fp32 masters and optimizer moments at pruned positions, once per mask change (between changes
        the gradient hooks keep them zero)."""
        if masks.is_dense or self._synced == masks.version:
            return
        from deepspeed import utils as ds

        keys = optimizer_state_keys(optimizer) if optimizer is not None else []
        for _, param, mask in self.local_parameters(masks):
            if self.stage3:
                master = ds.safe_get_local_fp32_param(param)
                if master is not None:
                    ds.safe_set_local_fp32_param(param, master * mask.view(master.shape))
                for key in keys:
                    value = ds.safe_get_local_optimizer_state(param, key)
                    ds.safe_set_local_optimizer_state(param, value * mask.view(value.shape), key)
            else:
                master = ds.safe_get_full_fp32_param(param)
                if master is not None:
                    ds.safe_set_full_fp32_param(param, master * mask)
                for key in keys:
                    value = ds.safe_get_full_optimizer_state(param, key)
                    if value is not None:
                        ds.safe_set_full_optimizer_state(param, value * mask, key)
        self._synced = masks.version


def optimizer_state_keys(optimizer) -> list[str]:
    """Per-weight buffers of the optimizer (Adam's `exp_avg`, `exp_avg_sq`, SGD's `momentum_buffer`)."""
    keys: set[str] = set()
    for state in unwrap_optimizer(optimizer).state.values():
        keys.update(k for k, v in state.items() if torch.is_tensor(v) and v.dim() > 0)
    return sorted(keys)


def step_keeps_pruned_zero(optimizer) -> bool:
    """Whether an optimizer step leaves pruned weights and their optimizer state exactly zero by itself, so they
    need masking only when masks change.

    On every backend the gradient an optimizer reads is already masked: `SparsityCallback` masks `.grad` (or
    this rank's shard of it: FSDP2, FSDP1) in `on_pre_optimizer_step`; under DeepSpeed the gradient hooks mask
    it before reduction, and masters and moments were zeroed when the mask was set. A zero gradient on a zero
    weight with zero state stays zero for an optimizer whose update of an entry reads only that entry
    (`preserves_zeros`: torch's SGD, Adam(W), ...). Under DeepSpeed that is the engine's inner optimizer: the
    Trainer's torch AdamW with the shipped configs; DeepSpeed's own FusedAdam/CPUAdam are not recognised and
    keep the per-step pass.
    """
    return optimizer is not None and preserves_zeros(optimizer)


def placement_for(model: nn.Module) -> Optional[Placement]:
    """The placement of `model`'s weights, or None when every rank holds them whole (one process, DDP)."""
    params = list(model.parameters())
    stage = zero_stage(params)
    if stage is not None:
        return DeepSpeedPlacement(model, stage3=stage == 3)
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return None
    if any(isinstance(p, DTensor) for p in params):
        return DTensorPlacement(model)
    from torch.distributed.fsdp import FlatParameter, FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        if any(isinstance(p, FlatParameter) for p in params):
            raise ValueError(
                "FSDP1 without use_orig_params: masks need the original parameters; set "
                "fsdp_use_orig_params: true in the accelerate config (or fsdp_version: 2)"
            )
        return FSDP1Placement(model)
    return None


# -- the callback's entry points ---------------------------------------------------------------------------
@contextlib.contextmanager
def bind_view(placement: Optional[Placement]) -> Iterator[None]:
    """Whole weights under their clean names while masks are bound to a model (FSDP1 hides names and shapes,
    ZeRO-3 shapes)."""
    if placement is None:
        yield
    else:
        with placement.bind_view():
            yield


@contextlib.contextmanager
def mask_update(masks: MaskSet, grads: bool = False, full: bool = True) -> Iterator[None]:
    """Run code that may change `masks`: inside, weights are whole (with `full`, else as they are); after,
    if the masks changed, every rank holds rank 0's masks. The caller then applies them (`masks.apply`)."""
    placement = masks.placement
    before = masks.version
    if placement is not None and full:
        with placement.full_view(masks, grads=grads):
            yield
    else:
        yield
    if masks.version != before and num_processes() > 1:
        agree_masks(masks)


def agree_masks(masks: MaskSet) -> None:
    """Make every rank's masks rank 0's; a disagreement means a criterion saw rank-local data, so it is
    logged, and weights that a rank had pruned differently are taken from rank 0 as well."""
    digests = masks_digests(masks)
    differ = [rank for rank, d in enumerate(digests) if d != digests[0]]
    if not differ:
        return
    logger.warning(
        "sparsity masks differ between ranks (ranks %s disagree with rank 0): taking rank 0's; a criterion used "
        "rank-local data without reducing it", differ,
    )
    broadcast_masks(masks, from_process=0)
    if masks.placement is None:
        from accelerate.utils import broadcast

        with torch.no_grad():
            for _, param, _ in masks.masked():
                param.data.copy_(broadcast(param.data.contiguous(), from_process=0))
    masks.apply_to_weights()


def loss_scale(optimizer) -> Optional[float]:
    """The GradScaler's current scale, or None without an enabled scaler (bf16, fp32, DeepSpeed)."""
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return None
    return float(scaler.get_scale())


def step_was_skipped(optimizer, scale_before: Optional[float]) -> bool:
    """Whether the optimizer step just taken was skipped for an fp16 overflow.

    Accelerate's `step_was_skipped` misses skips of optimizers that take the scaler into their own step
    (fused AdamW, the Trainer's default): their `step` runs and skips internally. A skip is also recognised
    by the scaler backing off, which it does exactly when it found inf or NaN gradients.
    """
    if getattr(optimizer, "step_was_skipped", False):
        return True
    after = loss_scale(optimizer)
    return scale_before is not None and after is not None and after < scale_before


def unscale_gradients(optimizer, args) -> None:
    """Under fp16 with a GradScaler, divide the gradients by the loss scale before a method reads them.

    The Trainer unscales only when it clips (`max_grad_norm > 0`); the scaler remembers the unscaling, so
    the optimizer step that follows does not repeat it and still skips on overflow.
    """
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not scaler.is_enabled() or (getattr(args, "max_grad_norm", 0) or 0) > 0:
        return
    scaler.unscale_(optimizer.optimizer)


__all__ = [
    "DTensorPlacement",
    "DeepSpeedPlacement",
    "FSDP1Placement",
    "Placement",
    "agree_masks",
    "bind_view",
    "broadcast_masks",
    "check_masks_agree",
    "loss_scale",
    "mask_update",
    "masks_digests",
    "num_processes",
    "optimizer_state_keys",
    "placement_for",
    "process_index",
    "step_keeps_pruned_zero",
    "step_was_skipped",
    "unscale_gradients",
]
