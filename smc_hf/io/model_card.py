"""The README.md of a sparse folder: Hub metadata, the sparsity table, how it was made and how to load it.

Everything comes from the folder's `sparsity` block, so in-memory and streaming pruning get the same card.
The card is meant for the Hub: it names a source by its Hub id or by its folder's name, and the command it
prints names local files by their names only, never by a path of the machine that made it.
"""

from __future__ import annotations

import os
import shlex
from typing import Optional

from huggingface_hub import ModelCard, ModelCardData

from .mask_file import MASKS_FILE
from .sparsity_block import read_sparsity_block, report_from_block


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _hub_id(name: Optional[str]) -> Optional[str]:
    """`name` when it looks like a Hub repository id (not a local path), for the card's `base_model`."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return name


def _is_local_path(token: str) -> bool:
    return os.path.isabs(token) or token.startswith(("./", "../", "~")) or os.path.exists(token)


def _local_name(path: str) -> str:
    return os.path.basename(os.path.normpath(os.path.expanduser(path))) or path


def source_name(source: Optional[str]) -> Optional[str]:
    """How a card names a source: its Hub id, or the name of its local folder (never its path)."""
    if not source:
        return None
    return _hub_id(source) or _local_name(source)


def public_command(command: Optional[str]) -> Optional[str]:
    """`command` with every local path (absolute, `./`, `~`, existing here, or the output folder) replaced by
    its last component; options written `--name=path` included. Hub ids and other values stay as they are."""
    if not command:
        return command
    tokens = shlex.split(command)
    out = tokens[:1]
    for previous, token in zip(tokens, tokens[1:]):
        flag, eq, value = token.partition("=") if token.startswith("--") else ("", "", token)
        output = (flag if eq else previous) == "--output"
        if value and not value.startswith("-") and (output or _is_local_path(value)):
            value = _local_name(value)
        out.append(f"{flag}{eq}{value}")
    return shlex.join(out)


def render_model_card(
    block: dict, base_model: Optional[str] = None, command: Optional[str] = None,
    sentence_transformers: bool = False,
) -> str:
    report = report_from_block(block)
    compressed = block.get("weights_format") == "bitmask_compressed"
    hub_base = _hub_id(base_model)
    data = ModelCardData(
        library_name="transformers",
        base_model=hub_base,
        tags=["smc_hf", "sparse", "pruned", f"{block.get('method') or 'sparse'}"],
    )
    title = f"{source_name(base_model) or 'Model'} pruned to {_pct(report.achieved)} sparsity"
    command = public_command(command)
    lines = [
        "---", data.to_yaml(), "---", "", f"# {title}", "",
        f"{_pct(report.achieved)} of the {report.numel:,} selected weights are exactly zero "
        f"(target {_pct(report.target)}; method `{block.get('method')}`, "
        + (f"N:M pattern `{report.pattern}`). " if report.pattern else f"distribution `{block.get('distribution')}`). ")
        + "Embeddings, norms, biases and task heads are not selected unless the command says otherwise.",
        "",
    ]
    if command:
        lines += ["## How it was made", "", "```bash", command, "```", ""]
    lines += ["## Sparsity", "", report.to_markdown(), ""]
    lines += ["## Loading", ""]
    if compressed:
        lines += [
            "The weights are stored compressed (kept values plus a bitmask). Restore the dense model with:", "",
            "```python", "from smc_hf.pruning.loading import from_compressed", "", 'model = from_compressed(".")', "```",
            "", "or write a plain dense folder with `smc_hf.io.compressed.decompress_folder(src, dst)`.", "",
        ]
    else:
        lines += [
            "The weights are dense with exact zeros: plain `from_pretrained` loads them, no extra code needed.", "",
            "```python", "from transformers import AutoModel", "",
            'model = AutoModel.from_pretrained("path/to/this/folder")', "```", "",
        ]
        if sentence_transformers:
            lines += [
                "The folder keeps every non-weight file and folder of the source (sentence-transformers modules "
                "included), so it loads as the source did:", "",
                "```python", "from sentence_transformers import SentenceTransformer", "",
                'model = SentenceTransformer("path/to/this/folder")', "```", "",
            ]
    if block.get("masks_file"):
        lines += [
            "## Continuing training with the same mask", "",
            f"`{MASKS_FILE}` holds the exact keep-mask (kept weights that happen to be zero included). "
            "`smc_hf` keeps it through fine-tuning:", "",
            "```python", "from smc_hf import SparseTrainer, SparsityConfig", "",
            'trainer = SparseTrainer(model=model, args=args, train_dataset=train, '
            'sparsity_config=SparsityConfig(method="fixed"))', "```", "",
        ]
    lines += [
        "The `sparsity` entry of `config.json` records the same numbers as plain data; loading never executes "
        f"anything named in it. Made with smc_hf {block.get('smc_hf_version')}.", "",
    ]
    return "\n".join(lines)


def write_model_card(folder: str, base_model: Optional[str] = None, command: Optional[str] = None) -> str:
    """Write `folder/README.md` from the folder's `sparsity` block; returns its path."""
    block = read_sparsity_block(folder)
    if block is None:
        raise ValueError(f"{folder}/config.json has no sparsity block; save the model with smc_hf first")
    path = os.path.join(folder, "README.md")
    st = os.path.isfile(os.path.join(folder, "modules.json"))
    ModelCard(render_model_card(block, base_model=base_model, command=command, sentence_transformers=st)).save(path)
    return path
