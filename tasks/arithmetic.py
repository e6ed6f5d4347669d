"""Arithmetic reasoning: MAWPS, ASDiv-A (5-fold cross-validation) and SVAMP (trained on MAWPS + ASDiv-A).

Data: the SVAMP release's CSVs (`data/arithmetic` in the repository, columns Question, Numbers, Equation, Answer; see
its README), read with `--data_dir` (the release root, a fold directory, or a directory with train.csv/dev.csv)
or `--train_file/--validation_file`; without either, the repository's `data/arithmetic`. No Hub copy in this format
exists, so there is no Hub path.

Model (`--decoder`): `gts` (default), the paper's goal-driven tree decoder (`GTSSolver`, tasks/gts_model.py), or
`seq`, a Transformer sequence decoder over the same prefix language (`ArithmeticSolver`); both on a pre-trained
encoder (RoBERTa-base in the paper). Graph2Tree (GTS plus a graph encoder over quantities) is not here: half of
the paper's arithmetic panels have no counterpart.
Metric: answer accuracy as the GTS code scores it: the predicted expression, evaluated with the problem's
numbers, within 1e-4 of the gold expression's value (Answer only where the gold expression cannot be evaluated;
Answer is rounded in a few rows, 3 of the 384 MAWPS fold-0 dev problems), with equation exact-match beside it.

Protocol as the paper's: every epoch is evaluated on the dev split (which is the test split, as in the SVAMP code)
and the best epoch is reported (`select_best_on`), the final epoch beside it. One run is one fold; the 5-fold score
pools the folds: correct answers of each fold's best epoch summed over all dev problems (`cross_validation_score`,
`tasks.metrics.pool_folds`). Pruned: every 2-D weight of the solver, embedding tables included, as GTS's code does
(`--prune_embeddings False` keeps the embeddings dense, like Graph2Tree's `--noembed`).

Paper hyper-parameters (GTS, spec section 2.2): 50 epochs, batch 4 (8 for SVAMP), Adam with weight decay 1e-5,
lr 8e-6 for the RoBERTa encoder and 1e-3 for the decoder (`--head_learning_rate`; 1e-4 for `--decoder seq`, a
Transformer that stalls at 1e-3, measured), dropout 0.5 in the parts the
solver adds (`--dropout`; RoBERTa keeps its own 0.1). As GTS: Adam (one per module there; the same update as one
Adam with a group per rate, as Adam's state is per parameter) with L2 weight decay 1e-5 added to the gradient of
every parameter (`GTSAdam`), and StepLR halving the rates every 20 epochs, stepped per epoch (`--step_lr_epochs`,
0 for the constant rate of `--lr_scheduler_type`). Deviations: GTS's 2-layer BiLSTM over the encoder is off by
default (`--rnn_layers 2` restores it, see gts_model.py); beam 5 keeps only expressions that can close within
`max_output_length` (the sequence decoder decodes greedily under the same rule); training problems whose equation
uses a constant rarer than the output vocabulary's (16 to 28 of MAWPS's 1,537 per fold, none of ASDiv-A's) are
dropped and logged, where GTS trains them toward an equation with that constant replaced by the best-scoring
number of the problem.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from datasets import Dataset, DatasetDict

from .arithmetic_model import ArithmeticSolver, ArithmeticSolverConfig
from .gts_model import GTSConfig, GTSSolver
from .base import DataArguments, DataError, ModelArguments, TaskDefinition, TwoRateAdamW, limited_splits
from .epoch_schedule import EpochStepDecay
from .io import csv_rows
from .metrics import answer_accuracy, answer_hits, pool_folds
from .prefix_expr import NUMBER_TOKEN, OPERATORS, evaluate_prefix, prefix_problem

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("Question", "Numbers", "Equation", "Answer")
NUMBER_TOKEN_IN_TEXT = re.compile(r"number(\d+)")
#: The SVAMP release carried in the repository (`data/arithmetic`), used when no --data_dir is given.
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "arithmetic")
#: Embedding tables by name (encoder `embeddings.*`, decoder `token_embed`/`pos_embed`); Graph2Tree's `--noembed`
#: likewise removed every name containing "embeddings".
EMBEDDING_NAMES = r"embed"
GTS_DENSE = r"(^|\.)predict\.constants$"
CONSTANT_MIN_COUNT = 5  # GTS: constants in at least 5 training equations become output tokens
#: `--decoder` choices: the paper's tree decoder (default) and the sequence decoder.
DECODERS = {"gts": GTSSolver, "seq": ArithmeticSolver}
#: The sequence decoder's default head rate (a Transformer; GTS's 1e-3 is for its tree decoder), see
#: `ArithmeticTask.default_head_learning_rate_for`.
SEQ_HEAD_LEARNING_RATE = 1e-4


def read_problems(path: str) -> list[dict[str, Any]]:
    """Rows of one SVAMP-format CSV as {question, numbers, equation, answer, source}, validated column by column.

    `source` is "file:line"; an equation must be one complete prefix expression over + - * / ^, `numberK`
    placeholders and decimal constants (anything else is refused here, not trained on).
    """
    reader = csv_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
    rows = [_parse_row(row, f"{path}:{reader.line_num}") for row in reader]
    if not rows:
        raise DataError(f"{path}: no examples (empty split)")
    return rows


def _parse_row(row: dict[str, str], where: str) -> dict[str, Any]:
    try:
        numbers = [float(x) for x in row["Numbers"].split()]
    except ValueError:
        raise DataError(f"{where}: column 'Numbers' is not a list of numbers: {row['Numbers']!r}") from None
    try:
        answer = float(row["Answer"])
    except ValueError:
        raise DataError(f"{where}: column 'Answer' is not a number: {row['Answer']!r}") from None
    equation = row["Equation"].split()
    problem = prefix_problem(equation)
    if problem:
        raise DataError(f"{where}: column 'Equation': {problem}")
    for token in equation:
        match = NUMBER_TOKEN.match(token)
        if match and int(match.group(1)) >= len(numbers):
            raise DataError(f"{where}: column 'Equation' uses {token} but 'Numbers' has {len(numbers)} values")
    return {"question": row["Question"], "numbers": numbers, "equation": equation, "answer": answer, "source": where}


def output_constants(equations: list[list[str]], min_count: int = CONSTANT_MIN_COUNT) -> list[str]:
    """Constants (neither operator nor placeholder) frequent enough in training equations, most frequent first."""
    counts = Counter(t for eq in equations for t in eq if t not in OPERATORS and not NUMBER_TOKEN.match(t))
    return [t for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]


def gold_value(equation: list[str], numbers: list[float], answer: float) -> float:
    """The value predictions are scored against: the gold expression's, else the Answer column."""
    value = evaluate_prefix(equation, numbers)
    return answer if value is None else value


def fold_counts(result: dict[str, Any], where: str = "all_results.json") -> tuple[int, int]:
    """(correct answers, dev problems) of one fold's `all_results.json`, at the checkpoint the figure reports."""
    prefix = "best_" if result.get("metric_rule") == "best" else ""
    metrics = result.get("metrics", {})
    keys = (f"{prefix}eval_answer_correct", f"{prefix}eval_examples")
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise ValueError(f"{where}: no {missing} in 'metrics'; was it written by an arithmetic run of this version?")
    return int(metrics[keys[0]]), int(metrics[keys[1]])


def cross_validation_score(result_files: list[str]) -> float:
    """The paper's 5-fold score from per-fold `all_results.json` files: pooled correct answers over all dev problems."""
    counts = []
    for path in result_files:
        with open(path, encoding="utf-8") as handle:
            counts.append(fold_counts(json.load(handle), path))
    return pool_folds(counts)


@dataclass
class ArithmeticCollator:
    """Pads token ids, labels (-100) and number positions (-1, to the solver's fixed slot count)."""

    pad_token_id: int
    num_slots: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        def pad(key, value, width=None):
            width = width or max(len(f[key]) for f in features)
            return torch.tensor([list(f[key]) + [value] * (width - len(f[key])) for f in features])

        batch = {
            "input_ids": pad("input_ids", self.pad_token_id),
            "attention_mask": pad("attention_mask", 0),
            "number_positions": pad("number_positions", -1, self.num_slots),
        }
        if "token_type_ids" in features[0]:
            batch["token_type_ids"] = pad("token_type_ids", 0)
        if "labels" in features[0]:
            batch["labels"] = pad("labels", -100)
        return batch


class GTSAdam(TwoRateAdamW):
    """GTS's optimizer: Adam (torch's, not AdamW) with weight decay as an L2 term in the gradient of every
    parameter, biases and norms included; the encoder at the learning rate, the parts the solver adds at the head
    rate. GTS builds one Adam per module: the same update, as Adam's state is per parameter."""

    def __call__(self, model, head_prefixes, head_lr, args):
        groups: dict[float, list] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups.setdefault(head_lr if name.startswith(tuple(head_prefixes)) else args.learning_rate,
                                  []).append(param)
        return torch.optim.Adam([{"params": p, "lr": lr} for lr, p in groups.items()], lr=args.learning_rate,
                                betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                                weight_decay=args.weight_decay)


class ArithmeticTask(TaskDefinition):
    family = "arithmetic"
    default_model = "roberta-base"
    auto_model = "GTSSolver or ArithmeticSolver (AutoModel encoder + prefix-equation decoder, --decoder gts|seq)"
    metric_name = "answer_accuracy"
    select_best_on = "answer_accuracy"
    default_max_seq_length = 256
    default_dropout = 0.5  # GTS
    default_head_learning_rate = 1e-3
    default_step_lr_epochs = 20  # GTS: StepLR(step_size=20, gamma=0.5), stepped per epoch
    step_lr_gamma = 0.5
    default_rnn_layers = 0  # GTS's BiLSTM off (see gts_model.py); --rnn_layers 2 is the SVAMP code's
    subdir = ""
    folds = True
    training_defaults = {
        "num_train_epochs": 50, "per_device_train_batch_size": 4, "learning_rate": 8e-6,
        "weight_decay": 1e-5, "lr_scheduler_type": "constant", "max_grad_norm": 0.0, "update_every": 1000,
        "seed": 6174,
    }

    def _split_files(self, data: DataArguments) -> dict[str, str]:
        if data.train_file or data.validation_file:
            return {k: v for k, v in (("train", data.train_file), ("validation", data.validation_file)) if v}
        data_dir = data.data_dir or (DEFAULT_DATA_DIR if os.path.isdir(DEFAULT_DATA_DIR) else None)
        if not data_dir:
            raise DataError(f"{self.name}: no Hub copy in the SVAMP format; pass --data_dir or --train_file")
        fold = f"fold{data.fold}" if self.folds else ""
        candidates = [os.path.join(data_dir, self.subdir, fold), os.path.join(data_dir, fold), data_dir]
        for directory in candidates:
            if os.path.isfile(os.path.join(directory, "train.csv")):
                return {"train": os.path.join(directory, "train.csv"), "validation": os.path.join(directory, "dev.csv")}
        raise DataError(f"{data_dir}: no train.csv for {self.name} (looked in {candidates})")

    def load_raw(self, data: DataArguments, cache_dir: Optional[str] = None) -> DatasetDict:
        return limited_splits({split: Dataset.from_list(read_problems(path))
                               for split, path in self._split_files(data).items()}, data)

    def load_model(self, model: ModelArguments, tokenizer, raw: DatasetDict):
        if model.decoder is not None and model.decoder not in DECODERS:
            raise ValueError(f"{self.name}: --decoder {model.decoder!r} is unknown; choose one of {sorted(DECODERS)}")
        path = self.checkpoint(model)
        config_file = os.path.join(path, "config.json")
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as handle:
                saved = json.load(handle).get("model_type")
            kinds = {GTSConfig.model_type: "gts", ArithmeticSolverConfig.model_type: "seq"}
            if saved in kinds:
                if model.decoder not in (None, kinds[saved]):
                    raise ValueError(f"{path}: a saved '{kinds[saved]}' solver, but --decoder {model.decoder}; "
                                     f"drop --decoder or pass --decoder {kinds[saved]}")
                overrides = {} if model.dropout is None else {"decoder_dropout": model.dropout}
                solver = DECODERS[kinds[saved]].from_pretrained(path, **overrides)
                saved_layers = getattr(solver.config, "rnn_layers", None)
                if model.rnn_layers is not None and model.rnn_layers != saved_layers:
                    raise ValueError(f"{path}: a saved solver with rnn_layers {saved_layers}, but --rnn_layers "
                                     f"{model.rnn_layers}; drop --rnn_layers (the saved weights fix it)")
                return solver
        if "train" not in raw:
            raise DataError(f"{self.name}: a new solver needs a training split to fix its output vocabulary")
        fixed = list(OPERATORS[:4]) + output_constants(raw["train"]["equation"])
        dropout = self.default_dropout if model.dropout is None else model.dropout
        decoder = model.decoder or "gts"
        extra = {}
        if decoder == "gts":
            extra["rnn_layers"] = self.default_rnn_layers if model.rnn_layers is None else model.rnn_layers
            if extra["rnn_layers"] < 0:
                raise ValueError(f"{self.name}: --rnn_layers must be 0 (no LSTM) or more, got {model.rnn_layers}")
        elif model.rnn_layers is not None:
            raise ValueError(f"{self.name}: --rnn_layers applies to the gts decoder only; leave it out with "
                             f"--decoder {decoder}")
        return DECODERS[decoder].from_encoder(path, fixed, cache_dir=model.cache_dir, decoder_dropout=dropout,
                                              **extra)

    def sparsity_selection(self, model_args: ModelArguments):
        """Every 2-D weight (GTS's rule: all weight matrices of all modules); without embeddings on request.

        GTS's constant embeddings (`predict.constants`, a 3-D tensor in the original) stay dense, as there."""
        keep_embeddings = model_args.prune_embeddings is False
        return ["."], [GTS_DENSE] + ([EMBEDDING_NAMES] if keep_embeddings else [])

    def preprocess(self, raw: DatasetDict, tokenizer, data: DataArguments, model) -> DatasetDict:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{self.name}: needs a fast tokenizer (character offsets locate the numbers)")
        vocab = {t: i for i, t in enumerate(model.config.output_vocab)}
        slots = model.config.max_num_slots
        max_length = data.max_seq_length or self.default_max_seq_length

        def encode(example):
            if len(example["numbers"]) > slots:
                raise DataError(f"{self.name}: a problem has {len(example['numbers'])} numbers, the solver {slots}")
            enc = tokenizer(example["question"], truncation=True, max_length=max_length, return_offsets_mapping=True)
            offsets = enc.pop("offset_mapping")
            positions = [-1] * len(example["numbers"])
            for match in NUMBER_TOKEN_IN_TEXT.finditer(example["question"]):
                k = int(match.group(1))
                if k < len(positions) and positions[k] < 0:
                    positions[k] = _token_at(offsets, match.start())
            enc["number_positions"] = positions
            enc["labels"] = [vocab.get(t, -100) for t in example["equation"]]
            return dict(enc)

        out = {}
        for split, ds in raw.items():
            encoded = ds.map(encode, remove_columns=ds.column_names)
            if split == "train":
                encoded = self._drop_unlearnable(encoded, ds, model.config.max_output_length)
            out[split] = encoded
        return DatasetDict(out)

    def _drop_unlearnable(self, encoded: Dataset, raw: Dataset, max_output_length: int) -> Dataset:
        """Training problems the decoder cannot emit (a constant outside its vocabulary, or too long), dropped
        with a warning that counts and names them (GTS keeps them and trains the rare constant as its best-scoring
        problem number, a wrong target; docs/fidelity.md C4.10)."""
        keep = [i for i, labels in enumerate(encoded["labels"]) if -100 not in labels and len(labels) <= max_output_length]
        if len(keep) == len(encoded):
            return encoded
        dropped = sorted(set(range(len(encoded))) - set(keep))
        sources = raw["source"] if "source" in raw.column_names else [f"row {i}" for i in range(len(raw))]
        named = ", ".join(f"{sources[i]} ({' '.join(raw[i]['equation'])})" for i in dropped[:10])
        logger.warning("%s: %d of %d training problems dropped: their equation uses a constant outside the "
                       "decoder's output vocabulary or is longer than %d tokens: %s%s", self.name, len(dropped),
                       len(encoded), max_output_length, named, " ..." if len(dropped) > 10 else "")
        return encoded.select(keep)

    def data_collator(self, tokenizer, model):
        return ArithmeticCollator(tokenizer.pad_token_id, model.config.max_num_slots)

    def head_parameter_prefixes(self, model) -> tuple[str, ...]:
        return model.optimizer_head_prefixes()

    def default_head_learning_rate_for(self, model) -> Optional[float]:
        """GTS's 1e-3 for its tree decoder; 1e-4 for the sequence decoder. Measured (MAWPS fold 0, MiniLM, 3
        epochs, docs/reproduction.md): the Transformer decoder at 1e-3 stalls at 41.7 from epoch 2 on, at 1e-4
        it reaches 55.0 at epoch 3."""
        if isinstance(model, ArithmeticSolver):
            return SEQ_HEAD_LEARNING_RATE
        return self.default_head_learning_rate

    def trainer_kwargs(self, model, model_args: ModelArguments, training_args) -> dict[str, Any]:
        """GTS's Adam with L2 decay at two rates, and its StepLR per epoch over the constant HF schedule."""
        kwargs = super().trainer_kwargs(model, model_args, training_args)
        if "optimizer_cls_and_kwargs" in kwargs:
            kwargs["optimizer_cls_and_kwargs"] = (GTSAdam, kwargs["optimizer_cls_and_kwargs"][1])
        step = self.default_step_lr_epochs if model_args.step_lr_epochs is None else model_args.step_lr_epochs
        if step < 0:
            raise ValueError(f"{self.name}: --step_lr_epochs must be 0 (off) or a number of epochs, got {step}")
        if step:
            scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
            if scheduler != "constant" or training_args.warmup_steps:
                raise ValueError(
                    f"{self.name}: GTS's StepLR (halve the rates every {step} epochs) sets each epoch's rate over a "
                    f"constant schedule, but the schedule is {scheduler!r} with warmup_steps "
                    f"{training_args.warmup_steps}; pass --lr_scheduler_type constant --warmup_steps 0, or "
                    f"--step_lr_epochs 0 to train with that schedule alone"
                )
            kwargs["callbacks"] = [EpochStepDecay(training_args.num_train_epochs, step, self.step_lr_gamma)]
        return kwargs

    def compute_metrics(self, tokenizer, raw_eval: Dataset, model):
        numbers, gold = raw_eval["numbers"], raw_eval["equation"]
        targets = [gold_value(eq, nums, answer) for eq, nums, answer in zip(gold, numbers, raw_eval["answer"])]
        vocab = model.config.output_vocab

        def compute(eval_pred):
            predictions = eval_pred.predictions
            predictions = predictions[0] if isinstance(predictions, tuple) else predictions
            expressions = [[vocab[i] for i in row if i >= 0] for row in predictions]
            exact = np.mean([e == g for e, g in zip(expressions, gold)]) * 100.0
            return {"answer_accuracy": answer_accuracy(expressions, numbers, targets), "equation_accuracy": float(exact),
                    "answer_correct": answer_hits(expressions, numbers, targets), "examples": len(targets)}

        return compute


def _token_at(offsets: list[tuple[int, int]], char: int) -> int:
    """Index of the token covering character `char`, -1 if truncated away (special tokens span (0, 0))."""
    for index, (start, end) in enumerate(offsets):
        if start <= char < end:
            return index
    return -1


class Mawps(ArithmeticTask):
    name = "mawps"
    subdir = "cv_mawps"


class AsdivA(ArithmeticTask):
    name = "asdiv-a"
    subdir = "cv_asdiv-a"


class Svamp(ArithmeticTask):
    """SVAMP: train on MAWPS + ASDiv-A (3,138 problems), evaluate on the 1,000 SVAMP problems; no folds."""

    name = "svamp"
    subdir = "mawps-asdiv-a_svamp"
    folds = False
    training_defaults = {**ArithmeticTask.training_defaults, "per_device_train_batch_size": 8}
