"""DeepSpeed's undocumented parameter attributes, in one place.

DeepSpeed publishes helpers to read and write a parameter's fp32 master and optimizer state
(`deepspeed.utils.safe_get/set_*`), but nothing that says which ZeRO stage holds a parameter or which
slice of it this rank owns. Those facts are attributes DeepSpeed sets on each parameter:

- `ds_id` (ZeRO-3, set by `zero.Init`; DeepSpeed's own `is_zero_param` tests it), with `ds_tensor` (this
  rank's flat slice) and `ds_process_group`;
- `_hp_mapping` (ZeRO-1/2 and the bf16 optimizer: the link to the fp32 master, set when the engine is built).

Every read of them is here. If DeepSpeed is running (Accelerate's public state says so) and holds an fp32
master for a parameter (the public `safe_get_full_fp32_param` returns one) while neither mark is found,
`DeepSpeedPrivateAPIError` names the marks and the DeepSpeed version instead of masking the wrong tensors.
"""

from __future__ import annotations

from importlib import metadata
from typing import Optional

import torch

#: The private names relied on (checked in tests/test_deepspeed_private.py).
ZERO3_MARK = "ds_id"
ZERO12_MARK = "_hp_mapping"
ZERO3_PARTITION = "ds_tensor"


class DeepSpeedPrivateAPIError(RuntimeError):
    """A private DeepSpeed name smc_hf relies on is gone from the installed DeepSpeed."""


def deepspeed_version() -> str:
    try:
        return metadata.version("deepspeed")
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _missing(names: str, why: str) -> DeepSpeedPrivateAPIError:
    return DeepSpeedPrivateAPIError(
        f"smc_hf finds DeepSpeed's ZeRO parameters through the private {names}, which DeepSpeed "
        f"{deepspeed_version()} does not set: {why}; install a DeepSpeed release that has it, or train with "
        "DDP or FSDP"
    )


def deepspeed_active() -> bool:
    """Whether Accelerate runs this process under DeepSpeed (its public state)."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    return PartialState().distributed_type == DistributedType.DEEPSPEED


def zero_stage(params: list[torch.Tensor]) -> Optional[int]:
    """3 for ZeRO-3 parameters, 2 for ZeRO-1/2 ones (whole weights, fp32 masters elsewhere), None otherwise."""
    if any(hasattr(p, ZERO3_MARK) for p in params):
        return 3
    if any(hasattr(p, ZERO12_MARK) for p in params):
        return 2
    if deepspeed_active():
        trainable = next((p for p in params if p.requires_grad), None)
        from deepspeed.utils import safe_get_full_fp32_param

        if trainable is not None and safe_get_full_fp32_param(trainable) is not None:
            raise _missing(f"{ZERO3_MARK!r} / {ZERO12_MARK!r}", "DeepSpeed holds fp32 masters for this model's "
                           "parameters but marks none of them")
    return None


def partition(param: torch.Tensor) -> torch.Tensor:
    """This rank's flat slice of a ZeRO-3 parameter."""
    local = getattr(param, ZERO3_PARTITION, None)
    if local is None:
        raise _missing(repr(ZERO3_PARTITION), f"a ZeRO-3 parameter (it has {ZERO3_MARK!r}) carries no local slice")
    return local


def partition_group(param: torch.Tensor):
    """The process group a ZeRO-3 parameter is partitioned over (None: the default group)."""
    return getattr(param, "ds_process_group", None)
