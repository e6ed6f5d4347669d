"""The compressed weight format (kept values + a bitmask) of a sparse folder.

For each masked weight it stores the kept values in row-major order plus its bitmask; other tensors are
stored as they are. A masked fp32 weight at sparsity s costs (1 - s) * 4 + 1/8 bytes per weight instead of 4. The bitmask is the mask
itself (kept weights that happen to be zero stay kept), so the exact mask survives compression.

Files are safetensors and their metadata is plain JSON: nothing in them is ever executed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, write_json
from .mask_file import MASKS_FILE, pack_bits, read_masks, unpack_bits
from .safetensors_io import INDEX_FILE, SINGLE_FILE, checkpoint_files, member_path, open_safetensors, save_tensors
from .sparsity_block import read_sparsity_block, write_config_block

COMPRESSED_FORMAT = "smc_hf.bitmask"
COMPRESSED_INDEX = "model.bitmask.index.json"


@dataclass
class CompressionSizes:
    dense_bytes: int
    compressed_bytes: int

    @property
    def ratio(self) -> float:
        return self.compressed_bytes / self.dense_bytes


def _compressed_name(dense_file: str) -> str:
    stem = os.path.basename(dense_file)[: -len(".safetensors")]
    return f"{stem}.bitmask.safetensors"


def compress_folder(
    folder: str, masks: Optional[dict[str, torch.Tensor]] = None, remove_dense: bool = True
) -> CompressionSizes:
    """Replace the dense weight files of a sparse folder by the compressed format, one shard in memory at a time.

    `masks` defaults to the folder's mask file. Weights without a mask are stored unchanged. With
    `remove_dense=False` the dense files stay until `remove_dense_files`, so a job killed in between can record
    that compression finished and then just finish the removal (the dense files are never half gone before that).
    """
    if masks is None:
        masks = read_masks(os.path.join(folder, MASKS_FILE))
    files = checkpoint_files(folder)
    unused = set(masks)
    weight_map, dense_bytes, compressed_bytes = {}, 0, 0
    written = []
    for path in files:
        tensors = load_file(path)
        out, layout = {}, {}
        for name, tensor in tensors.items():
            mask = masks.get(name)
            if mask is None:
                out[name] = tensor
                continue
            if tuple(mask.shape) != tuple(tensor.shape):
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight has {tuple(tensor.shape)}")
            unused.discard(name)
            out[f"{name}.values"] = tensor[mask.to(torch.bool)].contiguous()
            out[f"{name}.bitmask"] = pack_bits(mask)
            layout[name] = {"shape": list(tensor.shape)}
        clash = sorted(n for n in layout for suffix in (".values", ".bitmask") if n + suffix in tensors)
        if clash:
            raise ValueError(f"{path}: weights {clash[:5]} collide with other tensors named '<weight>.values/.bitmask'")
        target = os.path.join(folder, _compressed_name(path))
        with atomic_path(target) as tmp:
            save_tensors(out, tmp, metadata={"format": COMPRESSED_FORMAT, "compressed": json.dumps(layout)})
        written.append(target)
        weight_map.update({n: os.path.basename(target) for n in tensors})
        dense_bytes += os.path.getsize(path)
        compressed_bytes += os.path.getsize(target)
        del tensors, out
    if unused:
        raise ValueError(f"masks for weights that are not in the checkpoint: {sorted(unused)[:5]}")
    index = {
        "format": COMPRESSED_FORMAT,
        "dense_files": {os.path.basename(t): os.path.basename(d) for t, d in zip(written, files)},
        "weight_map": weight_map,
    }
    write_json(os.path.join(folder, COMPRESSED_INDEX), index, indent=2, sort_keys=True)
    if remove_dense:
        remove_dense_files(folder)
    return CompressionSizes(dense_bytes, compressed_bytes)


def remove_dense_files(folder: str) -> None:
    """Delete the dense weight files (and their index) that the folder's compressed index replaces; idempotent."""
    index = _compressed_index(folder)
    for name in index["dense_files"].values():
        if os.path.isfile(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    if os.path.isfile(os.path.join(folder, INDEX_FILE)):
        os.remove(os.path.join(folder, INDEX_FILE))


def mark_compressed(folder: str, ratio: float) -> None:
    """Record in the `sparsity` block that the folder's weights are in the compressed format (idempotent)."""
    block = read_sparsity_block(folder) or {}
    block.update(weights_format="bitmask_compressed", weights_index=COMPRESSED_INDEX, compressed_ratio=ratio)
    write_config_block(folder, block)


def _compressed_index(folder: str) -> dict:
    path = os.path.join(folder, COMPRESSED_INDEX)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} has no {COMPRESSED_INDEX}: not a compressed smc_hf checkpoint")
    try:
        with open(path) as f:
            index = json.load(f)
        files = index["dense_files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a valid compressed index ({err})") from None
    if index.get("format") != COMPRESSED_FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r}, expected {COMPRESSED_FORMAT!r}")
    if not isinstance(files, dict) or not isinstance(index.get("weight_map", {}), dict):
        raise ValueError(f"{path}: dense_files and weight_map must be objects of names")
    for name in [*files, *files.values(), *index.get("weight_map", {}).values()]:
        member_path(folder, name, path)
    if len(set(files.values())) != len(files):
        raise ValueError(f"{path}: two compressed shards map to the same dense file")
    missing = [n for n in files if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise FileNotFoundError(f"shard(s) {missing} listed in {path} are missing")
    return index


def _decompress_file(path: str) -> dict[str, torch.Tensor]:
    with open_safetensors(path) as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != COMPRESSED_FORMAT:
            raise ValueError(f"{path}: not a compressed smc_hf file (format {metadata.get('format')!r})")
        layout = json.loads(metadata.get("compressed", "{}"))
        stored = set(f.keys())
        out = {}
        for name in stored:
            if name.endswith((".values", ".bitmask")) and name.rsplit(".", 1)[0] in layout:
                continue
            out[name] = f.get_tensor(name)
        for name, entry in layout.items():
            if f"{name}.values" not in stored or f"{name}.bitmask" not in stored:
                raise ValueError(f"{path}: compressed weight {name} lacks its values or bitmask")
            mask = unpack_bits(f.get_tensor(f"{name}.bitmask"), entry["shape"], f"{path} [{name}]")
            values = f.get_tensor(f"{name}.values")
            if values.numel() != int(mask.sum()):
                raise ValueError(f"{path}: {name} stores {values.numel()} values for {int(mask.sum())} kept weights")
            dense = torch.zeros(tuple(entry["shape"]), dtype=values.dtype)
            dense[mask] = values
            out[name] = dense
    return out


def load_compressed_state_dict(folder: str) -> dict[str, torch.Tensor]:
    """The dense state dict of a compressed folder (pruned positions are exact zeros)."""
    index = _compressed_index(folder)
    state: dict[str, torch.Tensor] = {}
    for name in sorted(index["dense_files"]):
        state.update(_decompress_file(os.path.join(folder, name)))
    return state


def decompress_folder(folder: str, output_dir: str) -> None:
    """Write a plain dense `save_pretrained` folder from a compressed one, one shard in memory at a time."""
    index = _compressed_index(folder)
    os.makedirs(output_dir, exist_ok=True)
    dense_map = {}
    for compressed, dense in sorted(index["dense_files"].items()):
        tensors = _decompress_file(os.path.join(folder, compressed))
        save_file(tensors, os.path.join(output_dir, dense), metadata={"format": "pt"})
        dense_map.update({n: dense for n in tensors})
    dense_files = set(index["dense_files"].values())
    if dense_files != {SINGLE_FILE}:
        total = sum(os.path.getsize(os.path.join(output_dir, n)) for n in dense_files)
        with open(os.path.join(output_dir, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dense_map}, f, indent=2, sort_keys=True)
    skip = set(index["dense_files"]) | {COMPRESSED_INDEX}
    for name in os.listdir(folder):
        source = os.path.join(folder, name)
        if name not in skip and os.path.isfile(source):
            shutil.copy2(source, os.path.join(output_dir, name))
