"""PEFT's private LoRA-variant protocol, in one place.

PEFT has no public way to change how an existing LoRA layer computes its delta: `LoraVariant` is marked
"private, prone to change" in its own docstring, and a layer's variants live in the attribute
`LoraLayer.lora_variant` (adapter name -> variant), filled only from `LoraConfig` fields PEFT knows. Masked
LoRA needs both, so every use of them is here; when a PEFT release renames one, `PeftPrivateAPIError` says
which name and which PEFT version instead of masking silently doing nothing.
"""

from __future__ import annotations

import functools
from importlib import metadata

import torch
import torch.nn.functional as F
from torch import nn

#: The private names relied on, and where PEFT defines them (checked in tests/test_peft_private.py).
VARIANT_BASE = "peft.tuners.lora.layer.LoraVariant"
VARIANTS_ATTRIBUTE = "LoraLayer.lora_variant"


class PeftPrivateAPIError(RuntimeError):
    """A private PEFT name smc_hf relies on is gone from the installed PEFT."""


def peft_version() -> str:
    try:
        return metadata.version("peft")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _missing(name: str) -> PeftPrivateAPIError:
    return PeftPrivateAPIError(
        f"masked LoRA relies on PEFT's private {name}, which peft {peft_version()} does not have; install a peft "
        "release that has it (smc_hf is tested with peft 0.21), or train plain LoRA and use merge_sparse"
    )


def layer_variants(layer: nn.Module) -> dict:
    """The layer's adapter name -> `LoraVariant` dict (vanilla LoRA adapters are absent from it)."""
    variants = getattr(layer, "lora_variant", None)
    if not isinstance(variants, dict):
        raise _missing(VARIANTS_ATTRIBUTE)
    return variants


def set_variant(layer: nn.Module, adapter: str, variant) -> None:
    layer_variants(layer)[adapter] = variant


@functools.lru_cache(maxsize=None)
def masked_lora_variant() -> type:
    """The `LoraVariant` subclass that masks the LoRA delta (built lazily: PEFT is imported only when used)."""
    try:
        from peft.tuners.lora.layer import LoraVariant
    except ImportError as err:
        raise _missing(VARIANT_BASE) from err

    class MaskedLoraVariant(LoraVariant):
        """Vanilla LoRA whose delta is multiplied by the base layer's keep-mask, in forward and in merges."""

        def supports_lora_conversion(self) -> bool:
            return False

        @staticmethod
        def init(module, adapter_name: str, **kwargs) -> None:
            pass

        @staticmethod
        def delta(module, active_adapter: str) -> torch.Tensor:
            return module.get_delta_weight(active_adapter) * module.sparsity_mask

        @staticmethod
        def merge_safe(module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
            return orig_weight + MaskedLoraVariant.delta(module, active_adapter).to(orig_weight.dtype)

        @staticmethod
        def merge_unsafe(module, active_adapter: str, orig_weight: torch.Tensor) -> None:
            orig_weight.data += MaskedLoraVariant.delta(module, active_adapter).to(orig_weight.dtype)

        @staticmethod
        def unmerge(module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
            return orig_weight - MaskedLoraVariant.delta(module, active_adapter).to(orig_weight.dtype)

        @staticmethod
        def forward(module, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs) -> torch.Tensor:
            delta = MaskedLoraVariant.delta(module, active_adapter)
            weight = delta.T if module.fan_in_fan_out else delta
            out = F.linear(module.lora_dropout[active_adapter](x), weight.to(x.dtype))
            if module.lora_bias.get(active_adapter, False):
                out = out + module.lora_B[active_adapter].bias * module.scaling[active_adapter]
            return result + out.to(result.dtype)

    return MaskedLoraVariant
