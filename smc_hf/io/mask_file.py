"""The masks file: keep-masks as safetensors, one bool per byte or bit-packed (one bit per weight).

This module is the one place that knows the file name and both layouts: `MaskSet`, sparse folders,
streaming pruning and PEFT all read and write masks through it. Files are safetensors with plain JSON
metadata: nothing in them is ever executed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from .atomic import atomic_path
from .safetensors_io import TensorInfo, open_safetensors, save_tensors

MASKS_FILE = "sparsity_masks.safetensors"
BOOL_MASKS_FORMAT = "smc_hf.bool_masks"
PACKED_MASKS_FORMAT = "smc_hf.packed_bits"


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bytes, eight elements per byte, first element in the lowest bit."""
    flat = mask.detach().cpu().reshape(-1).to(torch.bool).numpy()
    return torch.from_numpy(np.packbits(flat, bitorder="little"))


def unpack_bits(packed: torch.Tensor, shape, where: str = "bitmask") -> torch.Tensor:
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (numel + 7) // 8:
        raise ValueError(
            f"{where}: packed bits of {packed.numel()} {packed.dtype} bytes cannot hold shape {tuple(shape)} "
            f"(needs {(numel + 7) // 8} uint8 bytes); the file is corrupt or does not belong to this model"
        )
    bits = np.unpackbits(packed.numpy(), count=numel, bitorder="little")
    return torch.from_numpy(bits.astype(bool)).reshape(tuple(shape))


def bool_masks_metadata() -> dict[str, str]:
    """Header metadata of a bool (one byte per weight) mask file."""
    return {"format": BOOL_MASKS_FORMAT}


def packed_masks_plan(shapes: dict[str, tuple[int, ...]]) -> tuple[list[TensorInfo], dict[str, str]]:
    """Header of a packed mask file, for writing it one mask at a time (`SafetensorsWriter`)."""
    plan = [TensorInfo(name, "U8", ((math.prod(shape) + 7) // 8,)) for name, shape in shapes.items()]
    metadata = {"format": PACKED_MASKS_FORMAT, "shapes": json.dumps({n: list(s) for n, s in shapes.items()})}
    return plan, metadata


def save_masks(masks: dict[str, torch.Tensor], path: str, packed: bool = True) -> None:
    """Write keep-masks (bit-packed, or one bool per byte) atomically: a partial file never sits at `path`."""
    if packed:
        shapes = {n: tuple(m.shape) for n, m in masks.items()}
        tensors, metadata = {n: pack_bits(m) for n, m in masks.items()}, packed_masks_plan(shapes)[1]
    else:
        tensors = {n: m.detach().cpu().to(torch.bool).contiguous() for n, m in masks.items()}
        metadata = bool_masks_metadata()
    with atomic_path(path) as tmp:
        save_tensors(tensors, tmp, metadata=metadata)


def read_masks(path: str) -> dict[str, torch.Tensor]:
    """Bool keep-masks from a mask file in either layout, with an error naming the file if it is unusable."""
    with open_safetensors(path) as f:
        metadata = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    if metadata.get("format") == PACKED_MASKS_FORMAT:
        try:
            shapes = json.loads(metadata["shapes"])
        except (KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: packed masks without a valid 'shapes' entry ({err})") from None
        missing = sorted(set(tensors) - set(shapes))
        if missing:
            raise ValueError(f"{path}: no shape recorded for packed masks {missing[:5]}")
        return {n: unpack_bits(t, shapes[n], f"{path} [{n}]") for n, t in tensors.items()}
    bad = [n for n, m in tensors.items() if m.dtype != torch.bool]
    if bad:
        raise ValueError(f"{path}: masks must be bool tensors or packed bits, got other dtypes for {bad[:5]}")
    return tensors
