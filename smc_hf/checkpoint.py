"""Sparse model folders: dense weights with exact zeros, the masks beside them, a declarative config block."""

from __future__ import annotations

import json
import os
from typing import Optional

import torch
from safetensors.torch import load_file
from torch import nn

from .masks import MASKS_FILE, MaskSet
from .report import sparsity_report
from .version import __version__

CONFIG_KEY = "sparsity"


def resolved_distribution(config) -> Optional[str]:
    if config is None:
        return None
    from .methods import METHODS

    return config.distribution or METHODS.get(config.method).default_distribution


def sparsity_metadata(model: nn.Module, masks: MaskSet, config=None) -> dict:
    """The `sparsity` block written into config.json: plain data, never anything to execute."""
    report = sparsity_report(model, masks=masks, config=config)
    return {
        "method": getattr(config, "method", None),
        "distribution": resolved_distribution(config),
        "target": report.target,
        "achieved": report.achieved,
        "selected_numel": report.numel,
        "masks_file": MASKS_FILE if not masks.is_dense else None,
        "modules": {m.name: {"target": m.target, "achieved": m.achieved} for m in report.modules},
        "smc_hf_version": __version__,
    }


def write_sparse_artifacts(model: nn.Module, output_dir: str, masks: MaskSet, config=None) -> None:
    """Add the masks file and the config block to a folder that `save_pretrained` already wrote."""
    if not masks.is_dense:
        masks.save(os.path.join(output_dir, MASKS_FILE))
    config_path = os.path.join(output_dir, "config.json")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            data = json.load(f)
        data[CONFIG_KEY] = sparsity_metadata(model, masks, config)
        tmp = config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, config_path)


def load_weights(model: nn.Module, folder: str) -> None:
    """Load `model.safetensors` (single or sharded) from `folder` into `model`; only safetensors is read."""
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        state = load_file(single)
    elif os.path.isfile(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"shard {name} listed in {index} is missing")
            state.update(load_file(path))
    else:
        raise FileNotFoundError(f"no model.safetensors in {folder}")
    own = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"{folder}: weights for unknown parameters {unexpected[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)


def load_masks(folder: str, masks: MaskSet) -> Optional[str]:
    path = os.path.join(folder, MASKS_FILE)
    if os.path.isfile(path):
        masks.load(path)
        return path
    return None
