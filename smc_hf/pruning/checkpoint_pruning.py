"""`prune_checkpoint`: a Hub checkpoint (or local folder) in, a sparse folder out (and optionally on the Hub).

In memory for any one-shot method (omp, random, snip, obert; the last two with calibration data), or
streaming shard by shard (omp, random) for checkpoints larger than memory. Every input is checked before
the long work starts: arguments, the method, the shard list, every shard's header.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional, Union

from ..config import SparsityConfig
from ..core.report import SparsityReport
from ..io.compressed import COMPRESSED_INDEX
from ..io.folders import check_output_outside, snapshot_ignore_patterns
from ..io.model_card import public_command
from ..io.safetensors_io import checkpoint_files, read_header
from ..io.sparsity_block import read_sparsity_block, report_from_block
from .loading import model_class_for
from .sparse_folder import save_sparse_pretrained
from .task_source import task_provider

logger = logging.getLogger(__name__)

#: The distributions `--streaming` resolves shard by shard.
STREAMING_DISTRIBUTIONS = ("global", "uniform", "erk")


def _arg(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class PruneCheckpointArguments:
    """How `smc-prune` / `prune_checkpoint` reads, prunes, writes and publishes a checkpoint."""

    output: str = field(metadata={"help": "Output folder (built under <output>.partial, renamed when complete)."})
    streaming: bool = _arg(False, "Prune shard by shard without loading the model (omp, random; larger than memory).")
    compress: bool = _arg(False, "Store kept values plus a bitmask instead of dense weights (load: smc_hf.io.compressed).")
    mask_format: str = _arg("packed", "Mask file layout: packed (1 bit per weight) or bool (1 byte).")
    model_class: Optional[str] = _arg(None, "transformers class to load with, e.g. AutoModelForCausalLM (default: saved).")
    tokenizer: Optional[str] = _arg(None, "Tokenizer for calibration data (default: the checkpoint's).")
    trust_remote_code: bool = _arg(False, "Allow the checkpoint's own Python code (off: only safetensors and JSON).")
    revision: Optional[str] = _arg(None, "Hub revision of the checkpoint.")
    calibration_task: Optional[str] = _arg(None, "Task in tasks/ whose training examples calibrate snip/obert.")
    calibration_file: Optional[str] = _arg(None, "Local JSON/JSONL/CSV calibration file (in the task's format with --calibration_task).")
    calibration_samples: int = _arg(128, "Calibration examples.")
    calibration_batch_size: int = _arg(8, "Calibration batch size.")
    calibration_text_column: Optional[str] = _arg(None, "Text column of a local calibration file (default: text).")
    calibration_label_column: Optional[str] = _arg(None, "Label column of a local calibration file.")
    max_length: int = _arg(128, "Token limit of calibration examples from a local file.")
    max_shard_size: str = _arg("5GB", "Largest weight file written (in-memory mode; streaming keeps the input's shards).")
    push_to_hub: Optional[str] = _arg(None, "Hub repository id to upload the finished folder to.")
    private: bool = _arg(False, "Create the Hub repository as private.")
    overwrite: bool = _arg(False, "Replace an existing non-empty output folder.")
    progress: bool = _arg(True, "Show progress bars.")

    def __post_init__(self):
        if not self.output:
            raise ValueError("output folder is required")
        if self.mask_format not in ("packed", "bool"):
            raise ValueError(f"mask_format must be 'packed' or 'bool', got {self.mask_format!r}")
        for name in ("calibration_samples", "calibration_batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.calibration_file is not None and not os.path.isfile(self.calibration_file):
            raise FileNotFoundError(f"calibration file {self.calibration_file} not found")
        if self.streaming and (self.calibration_task or self.calibration_file):
            raise ValueError("streaming pruning scores weights without data (omp, random); drop the calibration options")


def check_method(config: SparsityConfig, options: PruneCheckpointArguments) -> None:
    """Refuse a method that cannot run one-shot here, before any model is loaded."""
    from ..methods import METHODS

    method = METHODS.get(config.method)
    if not method.one_shot_capable:
        raise ValueError(f"method {config.method!r} needs training; smc-prune runs one-shot methods "
                         f"({', '.join(n for n in METHODS.names() if METHODS.get(n).one_shot_capable)})")
    if options.streaming and config.pattern:
        raise ValueError(f"streaming pruning does not apply N:M patterns (pattern = {config.pattern}); run "
                         "without --streaming")
    if options.streaming and config.distribution not in (None,) + STREAMING_DISTRIBUTIONS:
        raise ValueError(f"streaming pruning spreads sparsity by {', '.join(STREAMING_DISTRIBUTIONS)}; "
                         f"distribution {config.distribution!r} needs the model in memory (run without --streaming)")
    if method.needs_data and not (options.calibration_task or options.calibration_file):
        raise ValueError(f"method {config.method!r} scores weights from calibration data (gradients or layer inputs): "
                         "pass calibration_task or calibration_file (--calibration-task / --calibration-file)")


def resolve_source(source: str, options: PruneCheckpointArguments) -> str:
    """A local folder holding the checkpoint: `source` itself, or a Hub snapshot of everything but the weights
    in other formats (tokenizer, sentence-transformers modules and their folders included: the output keeps
    them all) and, without `trust_remote_code`, code."""
    if os.path.isdir(source):
        return source
    if os.path.exists(source):
        raise ValueError(f"{source} is a file; pass the checkpoint's folder or a Hub id")
    from huggingface_hub import snapshot_download

    return snapshot_download(source, revision=options.revision,
                             ignore_patterns=snapshot_ignore_patterns(options.trust_remote_code))


def equivalent_command(source: str, config: SparsityConfig, options: PruneCheckpointArguments) -> str:
    """The `smc-prune` command line that reproduces a call (non-default options only)."""
    argv = ["smc-prune", source]
    for group in (config, options):
        for f in fields(group):
            value = getattr(group, f.name)
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if f.name == "progress" or value == default or value is None:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag)
            elif isinstance(value, list):
                argv += [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
    return shlex.join(argv)


def push_folder(folder: str, repo_id: str, private: bool = False, commit_message: Optional[str] = None) -> str:
    """Upload a finished folder to a Hub model repository (created if needed); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message or "Upload sparse checkpoint (smc_hf)")
    return getattr(info, "commit_url", str(info))


def _calibration(options, local: str, config: SparsityConfig):
    """(model, dataloader) for calibration-based methods, the model loaded the way the task loads it."""
    from transformers import AutoTokenizer, set_seed

    from .calibration_data import file_dataloader, task_dataloader, task_inputs

    set_seed(config.mask_seed if config.mask_seed is not None else 0)
    tokenizer = AutoTokenizer.from_pretrained(options.tokenizer or local, trust_remote_code=options.trust_remote_code)
    if options.calibration_task:
        task, data, raw = task_inputs(options.calibration_task, options.calibration_samples, options.calibration_file)
        model = task.load_model(task_provider().ModelArguments(model_name_or_path=local), tokenizer, raw)
        return model, task_dataloader(task, data, raw, tokenizer, model, batch_size=options.calibration_batch_size)
    model = _load_model(local, options)
    loader = file_dataloader(
        options.calibration_file, tokenizer, model, samples=options.calibration_samples,
        batch_size=options.calibration_batch_size, text_column=options.calibration_text_column,
        label_column=options.calibration_label_column, max_length=options.max_length,
    )
    return model, loader


def _load_model(local: str, options: PruneCheckpointArguments):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(local, trust_remote_code=options.trust_remote_code)
    cls = model_class_for(config, options.model_class)
    return cls.from_pretrained(local, trust_remote_code=options.trust_remote_code, use_safetensors=True)


def prune_checkpoint(
    source: str,
    output: str,
    config: Union[SparsityConfig, dict],
    *,
    command: Optional[str] = None,
    **options,
) -> SparsityReport:
    """Prune the checkpoint `source` (Hub id or folder) one-shot and save it as a sparse folder at `output`.

    `config` says what to prune (method, sparsity, distribution, targets, ...); `options` are the fields of
    `PruneCheckpointArguments` (streaming, compress, calibration_task, push_to_hub, ...). Returns the
    sparsity report written into the folder's config.json and model card.
    """
    if isinstance(config, dict):
        config = SparsityConfig.from_dict(config)
    if not isinstance(config, SparsityConfig):
        raise TypeError(f"config must be a SparsityConfig or a dict of its fields, got {type(config).__name__}")
    args = PruneCheckpointArguments(output=output, **options)
    check_method(config, args)
    command = command or equivalent_command(source, config, args)
    local = resolve_source(source, args)
    check_output_outside(args.output, (local, source))
    if os.path.isfile(os.path.join(local, COMPRESSED_INDEX)):
        raise ValueError(f"{local} holds compressed weights; write a dense copy first with "
                         "smc_hf.io.compressed.decompress_folder(src, dst)")
    for path in checkpoint_files(local):
        read_header(path)
    packed = args.mask_format == "packed"
    if args.streaming:
        from .streaming import prune_checkpoint_streaming

        report = prune_checkpoint_streaming(
            local, args.output, config, model_class=args.model_class, trust_remote_code=args.trust_remote_code,
            packed_masks=packed, compress=args.compress, base_model=source, command=command,
            overwrite=args.overwrite, progress=args.progress,
        )
    else:
        from .prune import prune_model

        if args.calibration_task or args.calibration_file:
            model, loader = _calibration(args, local, config)
        else:
            model, loader = _load_model(local, args), None
        masks = prune_model(model, config, dataloader=loader)
        save_sparse_pretrained(
            model, args.output, masks, config, packed_masks=packed, compress=args.compress, base_model=source,
            command=command, auxiliary_from=local, overwrite=args.overwrite, max_shard_size=args.max_shard_size,
        )
        report = report_from_block(read_sparsity_block(args.output))
    if args.push_to_hub:
        url = push_folder(args.output, args.push_to_hub, private=args.private,
                          commit_message=f"Sparse checkpoint: {public_command(command)}")
        logger.info("pushed %s to %s", args.output, url)
    return report
