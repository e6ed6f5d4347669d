"""Commonsense reasoning as multiple choice: CommonsenseQA, WinoGrande, RACE (middle and high apart).

Every dataset is normalised to rows `{"first": [str]*C, "second": [str]*C, "label": int}` (one text pair per
choice), so one preprocessing and one head (`AutoModelForMultipleChoice`, RoBERTa-large in the paper) serve all.

Paper hyper-parameters (fairseq recipes the SMC-Bench code runs, spec section 2.1), mapped to `TrainingArguments`:
- CSQA: lr 1e-5, polynomial decay, 150 warmup of 3000 updates, batch 16, Adam (0.9, 0.98) eps 1e-6,
  weight decay 0.01, no clipping; inputs `Q: {stem}` / `A: {choice}`.
- WinoGrande: lr 1e-5, polynomial decay, 2375 warmup of 23750 updates, batch 32, same Adam. Scored as the paper
  (fairseq's `winogrande` task and criterion): each option filled into the blank and scored by its tokens' masked-LM
  log-probabilities, trained with the margin loss (alpha 5, beta 0.4; `tasks/winogrande_mlm.py`).
  `--winogrande_scoring multiple_choice` scores the two fillings with the multiple-choice head instead.
- RACE: lr 1e-5 constant, 5 epochs, batch 16 (1 x 8 accumulation x 2 GPUs), 512 tokens, article truncated.
  Trained on all of RACE, reported on test-middle and test-high separately.

Protocol as the paper's (fairseq validates every epoch and at the last update and keeps `checkpoint_best`):
every epoch is evaluated and the best checkpoint by dev accuracy is reported and saved (`select_best_on`), the
final evaluation beside it; RACE reports test-middle and test-high of the best-dev checkpoint.

Pruned weights: by default the attention and feed-forward matrices of the 24 layers, the release's
`--no-pruning-emb-heads` runs (its oBERT and LTH scripts; its evaluation paths are named `noembed_noclassifier`).
The release's README commands leave that flag off and also prune the word and position embeddings and the
classification head: `--sparsity_selection release-embeddings-heads`. The release does not say which of the two
produced the paper's commonsense figures.
"""

from __future__ import annotations

import glob
import os
from abc import abstractmethod
from typing import Any, Optional

import numpy as np
from datasets import Dataset, DatasetDict

from .base import DataArguments, DataError, ModelArguments, TaskDefinition, load_hub_or_disk, limited_splits
from .io import field, nonempty, read_json, read_jsonl
from .metrics import accuracy
from .winogrande_mlm import (MARGIN_ALPHA, MARGIN_BETA, MaskedSpanScoring, SpanCollator, encode_options,
                             load_span_scorer, span_accuracy)

_ADAM = {"adam_beta1": 0.9, "adam_beta2": 0.98, "adam_epsilon": 1e-6, "weight_decay": 0.01, "max_grad_norm": 0.0}


class MultipleChoiceTask(TaskDefinition):
    family = "commonsense"
    default_model = "roberta-large"
    auto_model = "AutoModelForMultipleChoice"
    metric_name = "accuracy"
    select_best_on = "accuracy"
    truncation: Any = True
    local_names: dict[str, str] = {}
    num_choices: int = 0  # choices per question; every record must have exactly this many

    @abstractmethod
    def normalise_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        """One raw example (authors' or Hub form) to the shared first/second/label form."""

    def check_choices(self, count: int, where: str) -> None:
        """The multiple-choice head and its collator need the same number of choices in every record."""
        if count != self.num_choices:
            raise DataError(f"{where}: {count} choices, but {self.name} has {self.num_choices} per question; "
                            f"fix or remove this record (every question needs exactly {self.num_choices} choices)")

    def load_raw(self, data: DataArguments, cache_dir: Optional[str] = None) -> DatasetDict:
        if data.train_file or data.validation_file:
            files = {"train": data.train_file, "validation": data.validation_file}
            splits = {split: self._read_file(path) for split, path in files.items() if path}
        elif data.data_dir:
            splits = self._read_data_dir(data.data_dir)
        else:
            splits = self._read_hub(data, cache_dir)
        return limited_splits(splits, data)

    def _read_file(self, path: str) -> Dataset:
        rows = [self.normalise_record(rec, _where(f"{path}:{lineno}", rec)) for lineno, rec in read_jsonl(path)]
        return Dataset.from_list(nonempty(rows, path))

    def _read_data_dir(self, data_dir: str) -> dict[str, Dataset]:
        return {split: self._read_file(os.path.join(data_dir, name)) for split, name in self.local_names.items()}

    def _read_hub(self, data: DataArguments, cache_dir) -> dict[str, Dataset]:
        name = data.dataset_name or self.hub_id
        raw = load_hub_or_disk(name, data.dataset_config_name or self.hub_config, cache_dir)
        out = {}
        for split in ("train", "validation"):
            if split not in raw:
                raise DataError(f"{name}: no '{split}' split (has {list(raw)})")
            rows = [self.normalise_record(r, _where(f"{name}[{split}] row {i}", r)) for i, r in enumerate(raw[split])]
            out[split] = Dataset.from_list(nonempty(rows, f"{name}[{split}]"))
        return out

    def load_model(self, model: ModelArguments, tokenizer, raw: DatasetDict):
        from transformers import AutoModelForMultipleChoice

        return AutoModelForMultipleChoice.from_pretrained(self.checkpoint(model), cache_dir=model.cache_dir)

    def preprocess(self, raw: DatasetDict, tokenizer, data: DataArguments, model) -> DatasetDict:
        max_length = data.max_seq_length or self.default_max_seq_length

        def encode(batch):
            firsts = [t for choices in batch["first"] for t in choices]
            seconds = [t for choices in batch["second"] for t in choices]
            enc = tokenizer(firsts, seconds, truncation=self.truncation, max_length=max_length)
            sizes = [len(choices) for choices in batch["first"]]
            out: dict[str, list] = {key: [] for key in enc}
            start = 0
            for size in sizes:
                for key, values in enc.items():
                    out[key].append(values[start:start + size])
                start += size
            out["label"] = batch["label"]
            return out

        return DatasetDict(
            {split: ds.map(encode, batched=True, remove_columns=ds.column_names) for split, ds in raw.items()}
        )

    def data_collator(self, tokenizer, model):
        from transformers import DataCollatorForMultipleChoice

        return DataCollatorForMultipleChoice(tokenizer)

    def compute_metrics(self, tokenizer, raw_eval: Dataset, model):
        def compute(eval_pred):
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            return {"accuracy": accuracy(np.argmax(logits, axis=-1), eval_pred.label_ids)}

        return compute


def _where(where: str, record: dict[str, Any]) -> str:
    """`where`, with the record's own id when it has one (CSQA `id`, WinoGrande `qID`, RACE `example_id`)."""
    for key in ("id", "qID", "example_id"):
        if isinstance(record.get(key), (str, int)):
            return f"{where} (id {record[key]})"
    return where


def _label(value: Any, labels: list[str], column: str, where: str) -> int:
    if value not in labels:
        raise DataError(f"{where}: unknown label {value!r} in column '{column}' (expected one of {labels})")
    return labels.index(value)


class CommonsenseQA(MultipleChoiceTask):
    """CSQA: the official `*_rand_split.jsonl` files, or Hub `tau/commonsense_qa` (flattened columns)."""

    name = "csqa"
    hub_id = "tau/commonsense_qa"
    default_max_seq_length = 512  # fairseq's --max-positions 512
    local_names = {"train": "train_rand_split.jsonl", "validation": "dev_rand_split.jsonl"}
    num_choices = 5
    training_defaults = {
        "learning_rate": 1e-5, "lr_scheduler_type": "polynomial", "warmup_steps": 150, "max_steps": 3000,
        "per_device_train_batch_size": 16, "update_every": 500, "seed": 0, **_ADAM,
    }

    def normalise_record(self, record, where):
        question = field(record, "question", where)
        if isinstance(question, dict):
            stem = field(record, "question.stem", where)
            choices = field(record, "question.choices", where)
            labels = [field(c, "label", f"{where} question.choices") for c in choices]
            texts = [field(c, "text", f"{where} question.choices") for c in choices]
        else:
            stem = question
            choices = field(record, "choices", where)
            labels, texts = field(choices, "label", where), field(choices, "text", where)
        if not isinstance(labels, list) or not isinstance(texts, list):
            raise DataError(f"{where}: columns 'choices.label' and 'choices.text' must be lists")
        if len(labels) != len(texts):
            raise DataError(f"{where}: {len(labels)} choice labels but {len(texts)} choice texts; "
                            f"each choice needs one label and one text")
        self.check_choices(len(texts), where)
        duplicates = sorted({str(x) for x in labels if list(labels).count(x) > 1})
        if duplicates:
            raise DataError(f"{where}: duplicate choice label(s) {duplicates} in {list(labels)}; "
                            f"the answerKey must name exactly one choice")
        label = _label(field(record, "answerKey", where), list(labels), "answerKey", where)
        return {"first": [f"Q: {stem}"] * len(texts), "second": [f"A: {t}" for t in texts], "label": label}


class WinoGrande(MultipleChoiceTask):
    """WinoGrande: the authors' `train_xl.jsonl`/`dev.jsonl`, or Hub `allenai/winogrande` (`winogrande_xl`).

    `--winogrande_scoring` (`SCORINGS`): `mlm_margin` (default, the paper's: the masked-LM span scorer of
    `tasks/winogrande_mlm.py`, `AutoModelForMaskedLM`) or `multiple_choice` (`AutoModelForMultipleChoice`, the head
    CSQA and RACE use). The model decides the rest: preprocessing, collator and metric follow the model loaded.
    """

    name = "winogrande"
    hub_id = "allenai/winogrande"
    hub_config = "winogrande_xl"
    default_max_seq_length = 80
    local_names = {"train": "train_xl.jsonl", "validation": "dev.jsonl"}
    num_choices = 2
    training_defaults = {
        "learning_rate": 1e-5, "lr_scheduler_type": "polynomial", "warmup_steps": 2375, "max_steps": 23750,
        "per_device_train_batch_size": 32, "update_every": 500,  # TRAINING.md: CSQA's sparse flags
        "seed": 1, **_ADAM,  # fairseq's default seed (the recipe gives none)
    }
    auto_model = "AutoModelForMaskedLM (mlm_margin) or AutoModelForMultipleChoice (--winogrande_scoring)"
    SCORINGS = ("mlm_margin", "multiple_choice")
    default_scoring = "mlm_margin"
    margin_alpha = MARGIN_ALPHA
    margin_beta = MARGIN_BETA

    def normalise_record(self, record, where):
        sentence = field(record, "sentence", where)
        if sentence.count("_") != 1:
            raise DataError(f"{where}: column 'sentence' must contain exactly one '_' blank")
        options = [field(record, "option1", where), field(record, "option2", where)]
        if not all(isinstance(o, str) and o.strip() for o in options):
            raise DataError(f"{where}: columns 'option1' and 'option2' must be non-empty texts, got {options}")
        label = _label(str(field(record, "answer", where)), ["1", "2"], "answer", where)
        before, after = sentence.split("_")
        return {"first": [before + o for o in options], "second": [after.strip()] * 2, "label": label,
                "sentence": sentence, "options": options}

    def scoring(self, model_args: ModelArguments) -> str:
        scoring = model_args.winogrande_scoring or self.default_scoring
        if scoring not in self.SCORINGS:
            raise ValueError(f"{self.name}: --winogrande_scoring {scoring!r} is unknown; choose one of "
                             f"{', '.join(self.SCORINGS)}")
        return scoring

    def check_model_arguments(self, model_args: ModelArguments) -> None:
        super().check_model_arguments(model_args)
        self.scoring(model_args)

    def load_model(self, model: ModelArguments, tokenizer, raw: DatasetDict):
        if self.scoring(model) == "multiple_choice":
            return super().load_model(model, tokenizer, raw)
        if tokenizer.mask_token_id is None:
            raise ValueError(f"{self.name}: the tokenizer has no mask token, which mlm_margin scoring replaces the "
                             f"option by; use a masked-LM checkpoint's tokenizer or --winogrande_scoring multiple_choice")
        return load_span_scorer(self.checkpoint(model), tokenizer.mask_token_id, model.cache_dir,
                                self.margin_alpha, self.margin_beta)

    def preprocess(self, raw: DatasetDict, tokenizer, data: DataArguments, model) -> DatasetDict:
        if not isinstance(model, MaskedSpanScoring):
            return super().preprocess(raw, tokenizer, data, model)
        max_length = data.max_seq_length or 512  # fairseq's --max-positions; spans are never truncated away

        def encode(example):
            enc = encode_options(tokenizer, example["sentence"], example["options"])
            longest = max(len(ids) for ids in enc["input_ids"])
            if longest > max_length:
                raise DataError(f"{self.name}: a filled sentence has {longest} tokens, over --max_seq_length "
                                f"{max_length}: {example['sentence']!r}; raise --max_seq_length")
            return {**enc, "label": example["label"]}

        return DatasetDict(
            {split: ds.map(encode, remove_columns=ds.column_names) for split, ds in raw.items()}
        )

    def data_collator(self, tokenizer, model):
        if isinstance(model, MaskedSpanScoring):
            return SpanCollator(tokenizer.pad_token_id)
        return super().data_collator(tokenizer, model)

    def compute_metrics(self, tokenizer, raw_eval: Dataset, model):
        if not isinstance(model, MaskedSpanScoring):
            return super().compute_metrics(tokenizer, raw_eval, model)

        def compute(eval_pred):
            scores = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            return {"accuracy": span_accuracy(scores, eval_pred.label_ids)}

        return compute


class Race(MultipleChoiceTask):
    """RACE: the authors' `RACE/{train,dev,test}/{middle,high}/*.txt` layout, or Hub `ehovy/race`.

    Trained on both levels; the checkpoint is selected on dev (both levels, `eval_dev_accuracy`) as the paper
    does, and test-middle and test-high are reported apart from it (`eval_middle_accuracy`,
    `eval_high_accuracy`); the primary `accuracy` pools both test levels. With `--validation_file` that file is
    the dev split and the only one evaluated (the primary metric is then its accuracy).
    """

    name = "race"
    select_best_on = "dev_accuracy"
    hub_id = "ehovy/race"
    hub_config = "all"
    default_max_seq_length = 512
    truncation = "only_first"
    num_choices = 4
    levels = ("middle", "high")
    training_defaults = {
        "learning_rate": 1e-5, "lr_scheduler_type": "constant", "num_train_epochs": 5,
        "per_device_train_batch_size": 1, "gradient_accumulation_steps": 16,
        "seed": 1, **_ADAM,  # fairseq's default seed (the recipe gives none)
    }

    def normalise_record(self, record, where):
        article = field(record, "article", where)
        question = field(record, "question", where)
        options = field(record, "options", where)
        if not isinstance(options, list):
            raise DataError(f"{where}: column 'options' must be a list")
        self.check_choices(len(options), where)
        label = _label(field(record, "answer", where), ["A", "B", "C", "D"], "answer", where)
        seconds = [question.replace("_", o) if "_" in question else f"{question} {o}" for o in options]
        return {"first": [article] * len(options), "second": seconds, "label": label}

    def _read_level_dir(self, path: str) -> Dataset:
        rows = []
        for name in sorted(glob.glob(os.path.join(path, "*.txt"))):
            doc = read_json(name)
            answers, questions = field(doc, "answers", name), field(doc, "questions", name)
            options = field(doc, "options", name)
            if not len(answers) == len(questions) == len(options):
                raise DataError(f"{name}: columns 'answers', 'questions', 'options' differ in length")
            for i, (a, q, o) in enumerate(zip(answers, questions, options)):
                record = {"article": field(doc, "article", name), "question": q, "options": o, "answer": a}
                rows.append(self.normalise_record(record, f"{name} question {i}"))
        return Dataset.from_list(nonempty(rows, path))

    def load_raw(self, data: DataArguments, cache_dir: Optional[str] = None) -> DatasetDict:
        splits = super().load_raw(data, cache_dir)
        if "validation" in splits:  # --validation_file: RACE selects on dev, so that is what the file is
            splits["dev"] = splits.pop("validation")
        return splits

    def _read_data_dir(self, data_dir):
        from datasets import concatenate_datasets

        split_dir = lambda split, level: os.path.join(data_dir, split, level)  # noqa: E731
        both = {split: concatenate_datasets([self._read_level_dir(split_dir(split, lv)) for lv in self.levels])
                for split in ("train", "dev")}
        return {**both, **{lv: self._read_level_dir(split_dir("test", lv)) for lv in self.levels}}

    def _read_hub(self, data, cache_dir):
        name = data.dataset_name or self.hub_id
        out = {}
        both = data.dataset_config_name or self.hub_config
        for config, split, key in [(both, "train", "train"), (both, "validation", "dev"),
                                   ("middle", "test", "middle"), ("high", "test", "high")]:
            raw = load_hub_or_disk(name, config, cache_dir)
            if split not in raw:
                raise DataError(f"{name}/{config}: no '{split}' split (has {list(raw)})")
            rows = [self.normalise_record(r, _where(f"{name}/{config}[{split}] row {i}", r))
                    for i, r in enumerate(raw[split])]
            out[key] = Dataset.from_list(nonempty(rows, f"{name}/{config}[{split}]"))
        return out

    def complete_metrics(self, metrics, eval_sets):
        metrics = dict(metrics)
        if all(f"eval_{lv}_accuracy" in metrics for lv in self.levels):
            sizes = {lv: len(eval_sets[lv]) for lv in self.levels}
            pooled = sum(metrics[f"eval_{lv}_accuracy"] * n for lv, n in sizes.items()) / sum(sizes.values())
            metrics["eval_accuracy"] = pooled
        elif "eval_dev_accuracy" in metrics:
            metrics["eval_accuracy"] = metrics["eval_dev_accuracy"]
        return metrics
