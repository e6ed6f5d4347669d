"""What every SMC-Bench task must say, and the argument dataclasses `run_glue_like.py` parses for it.

A task is a small class: where its data lives (Hub id, or the authors' files), how an example becomes
model inputs, which `AutoModelFor...` head and checkpoint it uses, its metric, and the paper's training
hyper-parameters. The entry script only wires these to the trainer, so adding a dataset never touches it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Optional

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk


#: Training arguments that, when a command sets one, leave the whole model selection to the command.
SELECTION_SWITCHES = ("eval_strategy", "save_strategy", "load_best_model_at_end")

#: ModelArguments fields that only one task family reads.
FAMILY_OPTIONS = {"prune_embeddings": "arithmetic", "rnn_layers": "arithmetic", "step_lr_epochs": "arithmetic",
                  "classifier_head": "protein", "epoch_one_cycle": "protein"}

#: ModelArguments fields that only one task reads.
TASK_OPTIONS = {"winogrande_scoring": "winogrande"}


class DataError(ValueError):
    """A data file or split is unusable; the message names the file (or split) and the column."""


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Hub id or local directory (default: the task's checkpoint from the paper)."}
    )
    tokenizer_name: Optional[str] = field(
        default=None, metadata={"help": "Tokenizer Hub id or directory, if not the model's."}
    )
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where downloaded models are cached."})
    head_learning_rate: Optional[float] = field(
        default=None,
        metadata={"help": "Learning rate of the newly initialised parts (task head, arithmetic decoder); "
                  "default: the task's, or --learning_rate when the task has none."},
    )
    dropout: Optional[float] = field(
        default=None,
        metadata={"help": "Dropout of the task model (default: the task's: 0.5 in the arithmetic decoder as GTS, "
                  "0.3 in translation as fairseq's mBART recipe; the checkpoint's own elsewhere)."},
    )
    prune_embeddings: Optional[bool] = field(
        default=None,
        metadata={"help": "Arithmetic only: prune the embedding tables with the other 2-D weights, as GTS did "
                  "(default True); False keeps the encoder's embeddings dense. --sparsity_targets overrides it."},
    )
    classifier_head: Optional[str] = field(
        default=None,
        metadata={"help": "Protein only: 'mean_mlp' (default, the release: mean over residues, "
                  "Linear-LayerNorm-ReLU-Linear) or 'cls' (transformers' <cls>-token dense+tanh head)."},
    )
    decoder: Optional[str] = field(
        default=None,
        metadata={"help": "Arithmetic solver decoder: 'gts' (default, the paper's goal-driven tree decoder) or 'seq' "
                  "(a Transformer sequence decoder)."},
    )
    rnn_layers: Optional[int] = field(
        default=None,
        metadata={"help": "Arithmetic GTS only: layers of the bidirectional LSTM over the encoder (the SVAMP code's 2); "
                  "default 0, a Linear projection instead (faster and better in a measured short run)."},
    )
    step_lr_epochs: Optional[int] = field(
        default=None,
        metadata={"help": "Arithmetic only: halve the learning rates every N epochs, GTS's StepLR stepped per epoch "
                  "(default 20, the paper's; 0 keeps the rate of --lr_scheduler_type)."},
    )
    winogrande_scoring: Optional[str] = field(
        default=None,
        metadata={"help": "WinoGrande only: 'mlm_margin' (default, the paper's: each option filled into the blank, "
                  "scored by its tokens' masked-LM log-probabilities, margin loss) or 'multiple_choice' (a 2-way "
                  "multiple-choice head with cross-entropy)."},
    )
    epoch_one_cycle: Optional[bool] = field(
        default=None,
        metadata={"help": "Protein only: the release's schedule, torch's OneCycleLR stepped once per epoch (the rate "
                  "constant within an epoch), in place of the per-step cosine; needs --lr_scheduler_type constant "
                  "--warmup_steps 0 beside it."},
    )


@dataclass
class DataArguments:
    task: str = field(metadata={"help": "Task name (see tasks.TASKS)."})
    dataset_name: Optional[str] = field(
        default=None, metadata={"help": "Hub dataset id, or a directory written by `save_to_disk` (default: the task's)."}
    )
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_file: Optional[str] = field(default=None, metadata={"help": "Local training file in the task's format."})
    validation_file: Optional[str] = field(default=None, metadata={"help": "Local evaluation file."})
    data_dir: Optional[str] = field(
        default=None, metadata={"help": "Directory in the authors' release layout (see the task's docstring)."}
    )
    fold: int = field(default=0, metadata={"help": "Cross-validation fold (arithmetic MAWPS and ASDiv-A)."})
    max_seq_length: Optional[int] = field(default=None, metadata={"help": "Input truncation (default: the task's)."})
    max_target_length: Optional[int] = field(default=None, metadata={"help": "Target truncation (translation)."})
    languages: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated mBART language codes (translation; default: the setting's)."}
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Keep the first N evaluation examples."})
    split_seed: int = field(default=42, metadata={"help": "Seed of splits the task makes itself (protein)."})
    label_thresholds: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated bin edges turning a regression target into classes (Meltome)."}
    )
    split_file: Optional[str] = field(
        default=None, metadata={"help": "HotProtein split file (JSON, or the released pickle with --trust_pickle); "
                                "default: the one *.json file in --data_dir."}
    )
    trust_pickle: bool = field(
        default=False, metadata={"help": "Allow --split_file to be a pickle. Unpickling runs code from the file: "
                                 "only for files you trust."}
    )


def load_hub_or_disk(name: str, config: Optional[str], cache_dir: Optional[str] = None) -> DatasetDict:
    """Load a Hub dataset, or the same thing saved locally with `save_to_disk` (a directory path).

    A local directory may hold one sub-directory per configuration, mirroring the Hub's configs.
    """
    if os.path.isdir(name):
        path = os.path.join(name, config) if config and os.path.isdir(os.path.join(name, config)) else name
        data = load_from_disk(path)
        if isinstance(data, Dataset):
            raise DataError(f"{path}: expected a DatasetDict with named splits, got a single Dataset")
        return data
    return load_dataset(name, config, cache_dir=cache_dir)


def truncate(data: Dataset, limit: Optional[int]) -> Dataset:
    return data.select(range(min(limit, len(data)))) if limit is not None else data


def limited_splits(splits: dict[str, Dataset], data: DataArguments) -> DatasetDict:
    """The raw splits, "train" cut to `--max_train_samples` and every evaluation split to `--max_eval_samples`."""
    return DatasetDict({split: truncate(d, data.max_train_samples if split == "train" else data.max_eval_samples)
                        for split, d in splits.items()})


#: A task refuses to train when more than this share of its sampled input tokens are the unknown token.
MAX_UNKNOWN_SHARE = 0.5
UNKNOWN_SAMPLE = 256


def _flat(values) -> list[int]:
    """Token ids of one example, flattening per-choice lists (multiple choice)."""
    if values and isinstance(values[0], (list, tuple)):
        return [t for part in values for t in part]
    return list(values)


def check_known_tokens(encoded: Dataset, tokenizer, source: str, sample: int = UNKNOWN_SAMPLE,
                       max_unknown: float = MAX_UNKNOWN_SHARE) -> float:
    """Share of unknown tokens among the content tokens of up to `sample` evenly spaced examples' `input_ids`.

    Raises a DataError naming the tokenizer and one example when the share exceeds `max_unknown`, or when the
    sample holds no content token at all: a model trained on such inputs learns from nothing but the labels.
    A tokenizer without an unknown token (byte-level BPE) can represent any text and always passes.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or "input_ids" not in encoded.column_names or len(encoded) == 0:
        return 0.0
    special = set(tokenizer.all_special_ids) - {unk}
    rows = sorted(set(np.linspace(0, len(encoded) - 1, min(sample, len(encoded))).round().astype(int).tolist()))
    unknown = content = 0
    worst, worst_share = rows[0], -1.0
    for index in rows:
        ids = [t for t in _flat(encoded[index]["input_ids"]) if t not in special]
        n_unk = sum(t == unk for t in ids)
        unknown, content = unknown + n_unk, content + len(ids)
        share = n_unk / len(ids) if ids else 1.0
        if share > worst_share:
            worst, worst_share = index, share
    share = unknown / content if content else 1.0
    if share > max_unknown:
        name = f"{type(tokenizer).__name__}({getattr(tokenizer, 'name_or_path', '')!r})"
        lower = (", which lower-cases its input (do_lower_case=True): a cased vocabulary needs do_lower_case=False"
                 if getattr(tokenizer, "do_lower_case", False) else "")
        tokens = tokenizer.convert_ids_to_tokens(_flat(encoded[worst]["input_ids"])[:24])
        what = f"{share:.0%} of the input tokens" if content else "all input tokens"
        raise DataError(
            f"{source}: {what} in a sample of {len(rows)} training examples are unknown ({tokenizer.unk_token}) to "
            f"the tokenizer {name}{lower}; example {worst}: {tokens}. Training on them would learn nothing: use the "
            f"model's own tokenizer (--tokenizer_name) or fix its settings."
        )
    return share


class TaskDefinition(ABC):
    """One benchmark dataset. Subclasses set the class attributes and implement the four hooks.

    Class attributes:
      name, family: registry name and task family.
      hub_id, hub_config: where the data comes from on the Hub (None if only the authors' release has it).
      default_model: the paper's checkpoint (a Hub id).
      auto_model: the `AutoModelFor...` class name of the head.
      metric_name: primary metric key in `compute_metrics` output (accuracies are in percent).
      training_defaults: the paper's hyper-parameters as `TrainingArguments` values, applied unless given, and
        `update_every`: the release's fixed mask-update interval of GMP and RigL for the task's full-length run.
      select_best_on: the paper's model selection: evaluate and save every epoch and load, at the end of each
        training round, the checkpoint with the best value of this metric key (as `metric_for_best_model`
        reads it), so the reported figure is the best evaluation and the after-training methods and LTH prune
        the best checkpoint of the previous round. None: the final evaluation is reported.
      seq2seq: whether the trainer must generate (translation).
    """

    name: str = ""
    family: str = ""
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    default_model: str = ""
    auto_model: str = ""
    metric_name: str = "accuracy"
    training_defaults: dict[str, Any] = {}
    select_best_on: Optional[str] = None
    seq2seq: bool = False
    default_max_seq_length: int = 128
    default_head_learning_rate: Optional[float] = None

    def default_training_arguments(self, given: Iterable[str] = ()) -> dict[str, Any]:
        """`training_defaults` plus the model selection of `select_best_on`, without the keys in `given`.

        The selection is one unit (`load_best_model_at_end` needs matching eval and save strategies): a command
        that sets any of `SELECTION_SWITCHES` owns the evaluation protocol and gets none of it by default.
        """
        given = set(given)
        defaults = dict(self.training_defaults)
        if self.select_best_on and not given & set(SELECTION_SWITCHES):
            defaults.update({"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True,
                             "metric_for_best_model": self.select_best_on, "save_total_limit": 1})
        return {key: value for key, value in defaults.items() if key not in given}

    @abstractmethod
    def load_raw(self, data: DataArguments, cache_dir: Optional[str] = None) -> DatasetDict:
        """Raw splits: "train" plus evaluation splits (every other key; "validation" unless the task says)."""

    def checkpoint(self, model: ModelArguments) -> str:
        return model.model_name_or_path or self.default_model

    def load_tokenizer(self, model: ModelArguments):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model.tokenizer_name or self.checkpoint(model), cache_dir=model.cache_dir)

    @abstractmethod
    def load_model(self, model: ModelArguments, tokenizer, raw: DatasetDict):
        """The model with the task's head, from `model.model_name_or_path` or `default_model`."""

    @abstractmethod
    def preprocess(self, raw: DatasetDict, tokenizer, data: DataArguments, model) -> DatasetDict:
        """Tokenised splits, same keys as `raw`."""

    @abstractmethod
    def data_collator(self, tokenizer, model):
        """Batches tokenised examples (dynamic padding)."""

    @abstractmethod
    def compute_metrics(self, tokenizer, raw_eval: Dataset, model) -> Callable:
        """A `compute_metrics` for the trainer; `raw_eval` is the evaluation split in its original order."""

    def sparsity_selection(self, model_args: ModelArguments) -> Optional[tuple[list[str], list[str]]]:
        """(targets, ignore) regexes the task prunes by default when the command gives no `--sparsity_targets`;
        None keeps the library's default selection (the backbone's Linear layers)."""
        return None

    def check_model_arguments(self, model_args: ModelArguments) -> None:
        """A task option given to a task family that does not read it is an error, not silently ignored."""
        for option, family in FAMILY_OPTIONS.items():
            if getattr(model_args, option) is not None and self.family != family:
                raise ValueError(f"{self.name}: --{option} applies to the {family} tasks only; leave it out here")
        for option, task in TASK_OPTIONS.items():
            if getattr(model_args, option) is not None and self.name != task:
                raise ValueError(f"{self.name}: --{option} applies to {task} only; leave it out here")

    def head_parameter_prefixes(self, model) -> tuple[str, ...]:
        """Parameter-name prefixes trained at the head learning rate (newly initialised parts)."""
        return ()

    def default_head_learning_rate_for(self, model) -> Optional[float]:
        """The head rate when `--head_learning_rate` is not given (a task may set one per model kind)."""
        return self.default_head_learning_rate

    def trainer_kwargs(self, model, model_args: ModelArguments, training_args) -> dict[str, Any]:
        """Extra trainer kwargs; by default a two-rate optimizer when the task has a head learning rate."""
        head_lr = model_args.head_learning_rate or self.default_head_learning_rate_for(model)
        prefixes = self.head_parameter_prefixes(model)
        if head_lr is None or not prefixes:
            return {}
        return {"optimizer_cls_and_kwargs": (TwoRateAdamW, {"head_prefixes": prefixes, "head_lr": head_lr,
                                                            "args": training_args})}

    def evaluate(self, trainer, eval_sets: dict[str, Dataset]) -> dict[str, float]:
        """Evaluation of the trained model; metrics of a split other than "validation" are prefixed `eval_<split>_`
        (the keys the in-training evaluation of the same splits logs)."""
        metrics: dict[str, float] = {}
        for split, data in eval_sets.items():
            prefix = "eval" if split == "validation" else f"eval_{split}"
            metrics.update(trainer.evaluate(eval_dataset=data, metric_key_prefix=prefix))
        return self.complete_metrics(metrics, eval_sets)

    def complete_metrics(self, metrics: dict[str, float], eval_sets: dict[str, Dataset]) -> dict[str, float]:
        """Metrics derived from the per-split ones (RACE pools its levels); applied to logged evaluations too."""
        return metrics

    def check_inputs(self, train: Dataset, tokenizer) -> float:
        """Refuse to train on mostly unknown tokens (see `check_known_tokens`); the share found otherwise."""
        return check_known_tokens(train, tokenizer, self.name)

    def data_record(self) -> Optional[dict[str, Any]]:
        """How the task split the data when it made the split itself (written to `data_splits.json`), else None."""
        return None

    def primary_metric(self, metrics: dict[str, float]) -> float:
        return float(metrics[f"eval_{self.metric_name}"])


class TwoRateAdamW:
    """Optimizer factory for `Trainer(optimizer_cls_and_kwargs=...)`: AdamW with a separate head rate.

    The paper trains pre-trained backbones at a small rate and new heads/decoders at a large one (GTS:
    8e-6 for RoBERTa, 1e-3 for the tree decoder); one shared rate either freezes the head or wrecks the
    backbone. Weight decay skips biases and norms, as the stock Trainer does.
    """

    def __call__(self, model, head_prefixes, head_lr, args):
        import torch

        groups: dict[tuple[float, float], list] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            lr = head_lr if name.startswith(tuple(head_prefixes)) else args.learning_rate
            decay = 0.0 if param.ndim < 2 else args.weight_decay
            groups.setdefault((lr, decay), []).append(param)
        return torch.optim.AdamW(
            [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()],
            lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        )
