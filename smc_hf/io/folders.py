"""Model folders on disk: staged (atomic) folders, complete Trainer checkpoints, weights and auxiliary files.

Folders appear atomically: they are built under `<output>.partial` and renamed when complete, so an
interrupted run never leaves something that looks like a result. Only safetensors is ever read.
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

from ..version import __version__
from .atomic import atomic_path
from .safetensors_io import checkpoint_files, open_safetensors

logger = logging.getLogger(__name__)

#: Written by the Trainer after a checkpoint's weights, optimizer and RNG state: its presence marks a complete one.
TRAINER_STATE_FILE = "trainer_state.json"
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
PARTIAL_SUFFIX = ".partial"
PARTIAL_MARKER = ".smc_hf_partial"
#: Weight files of a model folder, in any format, and their shard indexes.
WEIGHT_FILE = re.compile(
    r"\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|ot|gguf|onnx|onnx_data|tflite)$|\.(safetensors|bin)\.index\.json$"
)
#: Sub-folders holding the model's own weights exported for other runtimes (dense: never copied to a pruned folder).
EXPORT_DIRS = ("onnx", "openvino")


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


def is_source_weight(relpath: str) -> bool:
    """Whether a file of a source folder holds the source's own weights: any weight format at the top level
    (pruning rewrites the safetensors ones; the others would ship the dense source under the pruned name),
    their shard index, and the exports in `EXPORT_DIRS`. Files in other sub-folders belong to other modules
    (a sentence-transformers `2_Dense/model.safetensors`) and are not weights of the pruned model."""
    parts = relpath.replace(os.sep, "/").split("/")
    if parts[0] in EXPORT_DIRS and len(parts) > 1:
        return True
    return len(parts) == 1 and bool(WEIGHT_FILE.search(parts[0]))


def snapshot_ignore_patterns(trust_remote_code: bool = False) -> list[str]:
    """`snapshot_download` patterns for what `copy_auxiliary_files` would leave out: the other weight formats
    and exports (the safetensors weights are downloaded to be pruned); code only with `trust_remote_code`.
    fnmatch's `*` crosses `/`, so every pattern starts with a literal name to match at the top level only."""
    patterns = [".*", "pytorch_model*.bin", "pytorch_model*.bin.index.json", "tf_model*.h5", "flax_model*.msgpack",
                "rust_model*.ot", "model*.ckpt*", "model*.onnx*", "model*.gguf", "model*.tflite",
                "training_args.bin", "optimizer.*", "scheduler.*", "rng_state*", "scaler.*"]
    patterns += [f"{d}/*" for d in EXPORT_DIRS]
    if not trust_remote_code:
        patterns.append("*.py")
    return patterns


def copy_auxiliary_files(source: str, target: str) -> list[str]:
    """Copy every file and folder of the model folder `source` that is not one of its weights
    (`is_source_weight`) and that `target` lacks: configs, tokenizers, chat templates, sentence-transformers'
    `modules.json` and module folders (`1_Pooling/`, ...), so a library that loaded the source loads the
    copy. Hidden entries (`.git`, `.cache`, `.gitattributes`) are version-control or download state and stay
    behind. Each file appears atomically, so a run resumed after an interruption never keeps half a file.
    A folder reached twice through symbolic links (a link to an enclosing folder) is copied once, and the
    target itself is never copied into itself when it lies inside `source`.
    Returns the copied paths, relative to `source`."""
    copied: list[str] = []
    seen = {os.path.realpath(source), os.path.realpath(target)}

    def walk(relative: str) -> None:
        for name in sorted(os.listdir(os.path.join(source, relative))):
            rel = os.path.join(relative, name) if relative else name
            src, dst = os.path.join(source, rel), os.path.join(target, rel)
            if name.startswith(".") or is_source_weight(rel):
                continue
            if os.path.isdir(src):
                real = os.path.realpath(src)
                if real in seen:
                    continue
                seen.add(real)
                os.makedirs(dst, exist_ok=True)
                walk(rel)
            elif os.path.isfile(src) and not os.path.exists(dst):
                with atomic_path(dst) as tmp:
                    shutil.copy2(src, tmp)
                copied.append(rel)

    walk("")
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


