"""Sparse model folders: dense weights with exact zeros, the masks beside them, a declarative config block.

A folder written by `save_sparse_pretrained` loads with plain `from_pretrained` (the `sparsity` block in
config.json is data: method names in it are never resolved or imported on load). The masks file keeps the
exact mask, including kept weights that happen to be zero, so training continues with
`SparsityConfig(method="fixed")`. Folders appear atomically: they are built under `<output>.partial` and
renamed when complete, so an interrupted run never leaves something that looks like a result.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn

from .masks import MASKS_FILE, MaskSet
from .report import ModuleSparsity, SparsityReport, sparsity_report
from .safetensors_io import checkpoint_files, open_safetensors
from .version import __version__

logger = logging.getLogger(__name__)

CONFIG_KEY = "sparsity"
#: Written by the Trainer after a checkpoint's weights, optimizer and RNG state: its presence marks a complete one.
TRAINER_STATE_FILE = "trainer_state.json"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
PARTIAL_SUFFIX = ".partial"
PARTIAL_MARKER = ".smc_hf_partial"
#: Files of a model folder that are not weights: configs, tokenizers, processors, chat templates.
AUXILIARY_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja")


def resolved_distribution(config) -> Optional[str]:
    """The distribution the method really uses (a method may pick its default from other options, as RigL does)."""
    if config is None:
        return None
    from .methods import build_method

    return build_method(config).distribution


def sparsity_block(report: SparsityReport, config=None, masks_file: Optional[str] = MASKS_FILE, **extra) -> dict:
    """The `sparsity` block of config.json from a report: plain data, never anything to execute."""
    block = {
        "method": getattr(config, "method", None),
        "distribution": resolved_distribution(config),
        "target": report.target,
        "achieved": report.achieved,
        "selected_numel": report.numel,
        "masks_file": masks_file,
        "modules": {
            m.name: {"target": m.target, "achieved": m.achieved, "numel": m.numel, "zeros": m.zeros}
            for m in report.modules
        },
        "smc_hf_version": __version__,
    }
    block.update(extra)
    return block


def report_from_block(block: dict) -> SparsityReport:
    """The `SparsityReport` recorded in a `sparsity` block."""
    modules = [
        ModuleSparsity(name, int(m.get("numel", 0)), int(m.get("zeros", 0)), m.get("target"))
        for name, m in block.get("modules", {}).items()
    ]
    return SparsityReport(modules, block.get("target"))


def sparsity_metadata(model: nn.Module, masks: MaskSet, config=None, **extra) -> dict:
    """The `sparsity` block for an in-memory model and its masks (achieved sparsity counted in the weights)."""
    report = sparsity_report(model, masks=masks, config=config)
    return sparsity_block(report, config, MASKS_FILE if not masks.is_dense else None, **extra)


def write_config_block(output_dir: str, block: dict) -> None:
    """Set the `sparsity` block of `output_dir/config.json`, atomically."""
    config_path = os.path.join(output_dir, "config.json")
    with open(config_path) as f:
        data = json.load(f)
    data[CONFIG_KEY] = block
    tmp = config_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, config_path)


def read_sparsity_block(folder: str) -> Optional[dict]:
    """The `sparsity` block of a folder's config.json (JSON only), or None if it has none."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {folder}")
    try:
        with open(config_path) as f:
            block = json.load(f).get(CONFIG_KEY)
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    if block is not None and not isinstance(block, dict):
        raise ValueError(f"{config_path}: the '{CONFIG_KEY}' entry must be an object, got {type(block).__name__}")
    return block


def write_sparse_artifacts(
    model: nn.Module, output_dir: str, masks: MaskSet, config=None, packed_masks: bool = False, **extra
) -> None:
    """Add the masks file and the config block to a folder that `save_pretrained` already wrote.

    `packed_masks` stores one bit per weight instead of one byte; `extra` entries go into the block.
    """
    if not masks.is_dense:
        if packed_masks:
            from .compressed import save_masks

            save_masks(masks.state_dict(), os.path.join(output_dir, MASKS_FILE), packed=True)
        else:
            masks.save(os.path.join(output_dir, MASKS_FILE))
        extra.setdefault("masks_format", "packed_bits" if packed_masks else "bool")
    if os.path.isfile(os.path.join(output_dir, "config.json")):
        write_config_block(output_dir, sparsity_metadata(model, masks, config, **extra))


def _load_file(path: str) -> dict[str, torch.Tensor]:
    with open_safetensors(path) as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def load_weights(model: nn.Module, folder: str) -> None:
    """Load `model.safetensors` (single or sharded) from `folder` into `model`; only safetensors is read."""
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.isfile(single):
        state = _load_file(single)
    elif os.path.isfile(index):
        state = {}
        for path in checkpoint_files(folder):
            state.update(_load_file(path))
    else:
        raise FileNotFoundError(f"no model.safetensors in {folder}")
    own = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"{folder}: weights for unknown parameters {unexpected[:5]}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)


def is_complete_checkpoint(folder: str) -> bool:
    """Whether a `checkpoint-N` folder was finished: its trainer_state.json exists and is valid JSON."""
    try:
        with open(os.path.join(folder, TRAINER_STATE_FILE)) as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(folder: str) -> tuple[Optional[str], list[str]]:
    """The newest complete `checkpoint-N` in `folder` (None if there is none) and the newer incomplete ones
    it passed over: a run killed while writing a checkpoint leaves a folder without trainer_state.json."""
    if not os.path.isdir(folder):
        return None, []
    steps = sorted(
        (int(m.group(1)), name) for name in os.listdir(folder)
        if (m := _CHECKPOINT_DIR.match(name)) and os.path.isdir(os.path.join(folder, name))
    )
    skipped = []
    for _, name in reversed(steps):
        path = os.path.join(folder, name)
        if is_complete_checkpoint(path):
            return path, skipped
        skipped.append(path)
    return None, skipped


def check_safetensors_files(folder: str) -> None:
    """Open the header of every safetensors file in `folder`, so a truncated one fails with its path
    before any training starts (safetensors' own error names no file)."""
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with open_safetensors(os.path.join(folder, name)):
                pass


def load_masks(folder: str, masks: MaskSet) -> Optional[str]:
    path = os.path.join(folder, MASKS_FILE)
    if os.path.isfile(path):
        masks.load(path)
        return path
    return None


def model_class_for(config, name: Optional[str] = None):
    """The transformers class to build a model with: `name` (an `AutoModel*` or model class exported by
    transformers), else the saved `architectures[0]` when transformers exports it, else `AutoModel`.

    Only transformers' own namespace is consulted, so no name in a config can import other code.
    """
    import transformers

    if name:
        cls = getattr(transformers, name, None) if name.isidentifier() else None
        if not isinstance(cls, type) or not hasattr(cls, "from_pretrained") or not (
            name.startswith("AutoModel") or issubclass(cls, transformers.PreTrainedModel)
        ):
            raise ValueError(f"model class {name!r} is not an AutoModel* or model class of transformers")
        return cls
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None) if isinstance(arch, str) and arch.isidentifier() else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    return transformers.AutoModel


def copy_auxiliary_files(source: str, target: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy a model folder's non-weight files (tokenizer, generation config, ...) that `target` lacks."""
    copied = []
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if (
            os.path.isfile(path) and name.endswith(AUXILIARY_SUFFIXES) and name not in skip
            and not name.startswith("model.") and not name.startswith("pytorch_model")
            and not os.path.exists(os.path.join(target, name))
        ):
            shutil.copy2(path, os.path.join(target, name))
            copied.append(name)
    return copied


def _check_output(output_dir: str, overwrite: bool) -> None:
    if os.path.isfile(output_dir):
        raise FileExistsError(f"output {output_dir} is a file")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise FileExistsError(f"output folder {output_dir} exists and is not empty; pass overwrite=True (--overwrite)")


def check_output_outside(output_dir: str, sources) -> None:
    """Refuse an output folder that is, or contains, a folder the job reads: replacing it would delete the input."""
    out = os.path.realpath(output_dir)
    for source in sources:
        if not source or not os.path.exists(source):
            continue
        src = os.path.realpath(source)
        if src == out or src.startswith(out.rstrip(os.sep) + os.sep):
            relation = "is" if src == out else "contains"
            raise ValueError(f"output folder {output_dir} {relation} the input {source}; writing there would replace "
                             "(delete) the input: choose an --output outside it")


def partial_dir(output_dir: str) -> str:
    return os.path.abspath(output_dir).rstrip(os.sep) + PARTIAL_SUFFIX


@contextmanager
def staged_folder(
    output_dir: str, overwrite: bool = False, resume: bool = False, sources: tuple = ()
) -> Iterator[str]:
    """Build a folder under `<output_dir>.partial` and rename it to `output_dir` only once complete.

    With `resume`, an existing partial folder is kept (for work that can continue) and left in place if the
    body fails; otherwise it is started afresh and removed on failure. A `.partial` folder without our
    marker file is never touched. `sources`: folders the job reads, which `output_dir` must not be or contain.
    An existing output (with `overwrite`) is moved to a fresh unique name before the swap, so no folder
    smc_hf did not create (such as a user's `<output>.old`) is ever removed.
    """
    check_output_outside(output_dir, sources)
    output_dir = os.path.abspath(output_dir)
    _check_output(output_dir, overwrite)
    stage = partial_dir(output_dir)
    marker = os.path.join(stage, PARTIAL_MARKER)
    if os.path.exists(stage):
        if not os.path.isfile(marker):
            raise FileExistsError(f"{stage} exists and was not made by smc_hf; move it away")
        if not resume:
            shutil.rmtree(stage)
    os.makedirs(stage, exist_ok=True)
    if not os.path.isfile(marker):
        with open(marker, "w") as f:
            json.dump({"output_dir": output_dir, "smc_hf_version": __version__}, f)
    try:
        yield stage
    except BaseException:
        if not resume:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    os.remove(marker)
    _check_output(output_dir, overwrite)
    if os.path.isdir(output_dir):
        old = tempfile.mkdtemp(prefix=os.path.basename(output_dir) + ".replaced-", dir=os.path.dirname(output_dir))
        os.rename(output_dir, os.path.join(old, "previous"))
        os.rename(stage, output_dir)
        shutil.rmtree(old)
    else:
        os.makedirs(os.path.dirname(output_dir) or ".", exist_ok=True)
        os.rename(stage, output_dir)


def finish_sparse_folder(
    folder: str, *, compress: bool = False, base_model: Optional[str] = None, command: Optional[str] = None,
) -> None:
    """Last steps shared by in-memory and streaming pruning: optional compression, then the model card."""
    from .model_card import write_model_card

    if compress:
        from .compressed import compress_folder

        mark_compressed(folder, compress_folder(folder).ratio)
    write_model_card(folder, base_model=base_model, command=command)


def mark_compressed(folder: str, ratio: float) -> None:
    """Record in the `sparsity` block that the folder's weights are in the compressed format (idempotent)."""
    from .compressed import COMPRESSED_INDEX

    block = read_sparsity_block(folder) or {}
    block.update(weights_format="bitmask_compressed", weights_index=COMPRESSED_INDEX, compressed_ratio=ratio)
    write_config_block(folder, block)


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
        write_sparse_artifacts(model, stage, masks, config, packed_masks=packed_masks, source=base_model)
        if auxiliary_from and os.path.isdir(auxiliary_from):
            copy_auxiliary_files(auxiliary_from, stage)
        finish_sparse_folder(stage, compress=compress, base_model=base_model, command=command)
    return os.path.abspath(output_dir)
