"""Sparse folders of an in-memory model: dense weights with exact zeros, the masks beside them, the
`sparsity` block in config.json and a model card.

The masks file keeps the exact mask, including kept weights that happen to be zero, so training continues
with the `fixed` method. The folder appears atomically (`smc_hf.io.folders.staged_folder`).
"""

from __future__ import annotations

import os
from typing import Optional

from torch import nn

from ..core.masks import MaskSet
from ..core.report import sparsity_report
from ..io.compressed import compress_folder, mark_compressed
from ..io.folders import copy_auxiliary_files, staged_folder
from ..io.mask_file import MASKS_FILE, save_masks
from ..io.model_card import source_name, write_model_card
from ..io.sparsity_block import SparsityReport, sparsity_block, write_config_block
from ..methods import build_method


def resolved_distribution(config) -> Optional[str]:
    """The distribution the method really uses (a method may pick its default from other options)."""
    if config is None:
        return None
    return build_method(config).distribution


def config_block(report: SparsityReport, config=None, masks_file: Optional[str] = MASKS_FILE, **extra) -> dict:
    """The `sparsity` block for `report`, with the method and the distribution it really uses from `config`."""
    return sparsity_block(report, getattr(config, "method", None), resolved_distribution(config), masks_file, **extra)


def sparsity_metadata(model: nn.Module, masks: MaskSet, config=None, **extra) -> dict:
    """The `sparsity` block for an in-memory model and its masks (achieved sparsity counted in the weights)."""
    report = sparsity_report(model, masks=masks, config=config)
    return config_block(report, config, MASKS_FILE if not masks.is_dense else None, **extra)


def write_sparse_artifacts(
    model: nn.Module, output_dir: str, masks: MaskSet, config=None, packed_masks: bool = False, **extra
) -> None:
    """Add the masks file and the config block to a folder that `save_pretrained` already wrote.

    `packed_masks` stores one bit per weight instead of one byte; `extra` entries go into the block.
    """
    if not masks.is_dense:
        if packed_masks:
            save_masks(masks.state_dict(), os.path.join(output_dir, MASKS_FILE), packed=True)
        else:
            masks.save(os.path.join(output_dir, MASKS_FILE))
        extra.setdefault("masks_format", "packed_bits" if packed_masks else "bool")
    if os.path.isfile(os.path.join(output_dir, "config.json")):
        write_config_block(output_dir, sparsity_metadata(model, masks, config, **extra))


def finish_sparse_folder(
    folder: str, *, compress: bool = False, base_model: Optional[str] = None, command: Optional[str] = None,
) -> None:
    """Last steps shared by in-memory and streaming pruning: optional compression, then the model card."""
    if compress:
        mark_compressed(folder, compress_folder(folder).ratio)
    write_model_card(folder, base_model=base_model, command=command)


def save_sparse_pretrained(
    model: nn.Module,
    output_dir: str,
    masks: MaskSet,
    config=None,
    *,
    packed_masks: bool = True,
    compress: bool = False,
    base_model: Optional[str] = None,
    command: Optional[str] = None,
    auxiliary_from: Optional[str] = None,
    overwrite: bool = False,
    max_shard_size="5GB",
) -> str:
    """Save a pruned model as a sparse folder: dense weights with exact zeros (or the compressed form),
    the masks, the config block and a model card, appearing atomically at `output_dir`."""
    with staged_folder(output_dir, overwrite=overwrite, sources=(auxiliary_from,)) as stage:
        model.save_pretrained(stage, max_shard_size=max_shard_size)
        write_sparse_artifacts(model, stage, masks, config, packed_masks=packed_masks, source=source_name(base_model))
        if auxiliary_from and os.path.isdir(auxiliary_from):
            copy_auxiliary_files(auxiliary_from, stage)
        finish_sparse_folder(stage, compress=compress, base_model=base_model, command=command)
    return os.path.abspath(output_dir)
