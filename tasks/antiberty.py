"""AntiBERTy (the pinned `antiberty==0.1.3` package) as a transformers folder of safetensors, made once.

The package ships a 25.8M-parameter protein BERT (8 layers, width 512, a 25-token upper-case residue vocabulary)
as a torch pickle (`trained_models/AntiBERTy_md_smooth/pytorch_model.bin`) for its own `AntiBERTy` class. The first
use of `--model_name_or_path antiberty` converts it into a plain `BertModel` folder (config, `model.safetensors`,
a `BertTokenizer` with `do_lower_case=False`, so "M K V L" stays four residues and not four `[UNK]`) under
`$SMC_HF_CACHE/antiberty-<version>` (default `~/.cache/smc_hf`); every later run loads only that folder.

The pickle is read once, with `torch.load(weights_only=True)`: the unpickler then only rebuilds tensors and plain
containers, never runs code from the file. The folder is written in a staging folder beside the target and renamed
into place, so a killed conversion leaves no half folder and two concurrent first uses both end with one complete
folder. The encoder and its pooler are kept (the pooler feeds BERT's sequence-classification head); AntiBERTy's
pre-training heads (masked-LM, species, chain, graft) are left out: nothing here fine-tunes them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from typing import Optional

#: The package's files, relative to its import folder.
CHECKPOINT_SUBDIR = os.path.join("trained_models", "AntiBERTy_md_smooth")
VOCAB_SUBPATH = os.path.join("trained_models", "vocab.txt")
#: Environment variable naming the cache root (default `~/.cache/smc_hf`).
CACHE_ENV = "SMC_HF_CACHE"
#: State-dict prefixes kept (the encoder with its pooler), renamed to `BertModel`'s own names.
ENCODER_PREFIX = "bert."
#: Buffers transformers rebuilds itself; older checkpoints saved them.
DROPPED_BUFFERS = ("embeddings.position_ids",)


class AntibertyConversionError(RuntimeError):
    """The package's checkpoint is not what the conversion expects; the message names the file and the fix."""


def cache_root() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "smc_hf")


def package_dir() -> Optional[str]:
    """The installed `antiberty` package's folder (found without importing it), or None."""
    spec = importlib.util.find_spec("antiberty")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def encoder_state_dict(checkpoint_file: str) -> dict:
    """The encoder's tensors from AntiBERTy's pickle, named as `BertModel` names them."""
    import torch

    try:
        state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file weights_only cannot read is not the pinned package's checkpoint
        raise AntibertyConversionError(
            f"{checkpoint_file}: not readable as a tensors-only checkpoint ({exc}); reinstall the pinned "
            f"package: pip install antiberty==0.1.3") from exc
    if not isinstance(state, dict) or not any(k.startswith(ENCODER_PREFIX) for k in state):
        raise AntibertyConversionError(
            f"{checkpoint_file}: expected a state dict with '{ENCODER_PREFIX}*' tensors; reinstall antiberty==0.1.3")
    out = {k[len(ENCODER_PREFIX):]: v.contiguous() for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    for key in DROPPED_BUFFERS:
        out.pop(key, None)
    return out


def read_vocab(vocab_file: str) -> dict[str, int]:
    """Token -> id, one token a line. Passed as a dict: transformers 5's `BertTokenizer` ignores `vocab_file=`
    (the package's own `AntiBERTyRunner` passes that, and gets the five special tokens only)."""
    with open(vocab_file, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f if line.strip()]
    if len(set(tokens)) != len(tokens) or "[UNK]" not in tokens:
        raise AntibertyConversionError(f"{vocab_file}: expected unique tokens including [UNK]; reinstall antiberty==0.1.3")
    return {token: i for i, token in enumerate(tokens)}


def convert(checkpoint_dir: str, vocab_file: str, out_dir: str) -> str:
    """Write `out_dir` (config, model.safetensors, tokenizer) from AntiBERTy's `checkpoint_dir` and `vocab_file`.

    Atomic: built in a staging folder, then renamed; if `out_dir` appeared meanwhile (another process), that one is
    kept. A state dict that does not fill the model exactly is an error, not a silently re-initialised layer.
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    with open(os.path.join(checkpoint_dir, "config.json"), encoding="utf-8") as f:
        raw = json.load(f)
    for key in ("_name_or_path", "architectures", "transformers_version", "gradient_checkpointing"):
        raw.pop(key, None)
    config = BertConfig(**raw)
    state = encoder_state_dict(os.path.join(checkpoint_dir, "pytorch_model.bin"))
    model = BertModel(config, add_pooling_layer=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AntibertyConversionError(
            f"{checkpoint_dir}: the checkpoint does not match a BertModel of its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; reinstall antiberty==0.1.3")
    tokenizer = BertTokenizer(vocab=read_vocab(vocab_file), do_lower_case=False)

    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".staging-", dir=parent)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, out_dir)
        except OSError:
            if not os.path.isfile(os.path.join(out_dir, "model.safetensors")):
                raise
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging)
    return out_dir


def antiberty_folder(pkg_dir: Optional[str] = None, root: Optional[str] = None, version: Optional[str] = None) -> str:
    """The converted folder of the installed package (or of `pkg_dir`, laid out as the package), converting on first
    use; later calls read no pickle."""
    pkg_dir = pkg_dir or package_dir()
    if pkg_dir is None:
        raise AntibertyConversionError(
            "the antiberty package is not installed; install it with pip install -e \".[real]\" "
            "(or: pip install antiberty==0.1.3)")
    if version is None:
        try:
            version = importlib.metadata.version("antiberty")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    out_dir = os.path.join(root or cache_root(), f"antiberty-{version}")
    if os.path.isfile(os.path.join(out_dir, "model.safetensors")):
        return out_dir
    return convert(os.path.join(pkg_dir, CHECKPOINT_SUBDIR), os.path.join(pkg_dir, VOCAB_SUBPATH), out_dir)
