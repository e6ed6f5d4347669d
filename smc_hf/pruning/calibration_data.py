"""Calibration batches for pruning a checkpoint (SNIP, oBERT): from a task in `tasks/` or a local file.

A task gives its own preprocessing and collator, so batches carry the labels its head needs. A local file
(JSON list, JSON lines or CSV) needs a text column; labels come from a label column, or, for language-model
heads, from the text itself (causal: next token; masked: 15% of tokens masked).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Optional

from torch.utils.data import DataLoader

from .task_source import task_provider


def read_records(path: str) -> list[dict[str, Any]]:
    """Rows of a JSON list, JSON-lines or CSV/TSV file, with errors naming the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration file {path} not found")
    if path.endswith((".csv", ".tsv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ","))
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if text.lstrip().startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from None
        else:
            rows = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    if not rows:
        raise ValueError(f"calibration file {path} has no rows")
    bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: row {bad + 1} is not an object with named columns")
    return rows


def _label(value, label2id: dict, where: str) -> int:
    if isinstance(value, str) and value in label2id:
        return int(label2id[value])
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: label {value!r} is neither an integer nor one of {sorted(label2id)}") from None


def file_dataloader(
    path: str, tokenizer, model, *, samples: int, batch_size: int, text_column: Optional[str] = None,
    label_column: Optional[str] = None, max_length: int = 128,
) -> DataLoader:
    """Batches of the first `samples` rows of a local file, tokenised for `model`."""
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    rows = read_records(path)[:samples]
    columns = list(rows[0])
    text_column = text_column or ("text" if "text" in columns else None)
    if text_column is None or text_column not in columns:
        raise ValueError(f"{path}: no text column {text_column or 'text'!r}; columns are {columns} (pass text_column)")
    if label_column is not None and label_column not in columns:
        raise ValueError(f"{path}: no label column {label_column!r}; columns are {columns}")
    label2id = dict(getattr(model.config, "label2id", None) or {})
    examples = []
    for i, row in enumerate(rows):
        text = row.get(text_column)
        if not isinstance(text, str) or not text:
            raise ValueError(f"{path}: row {i + 1} has no text in column {text_column!r}")
        example = dict(tokenizer(text, truncation=True, max_length=max_length))
        if label_column is not None:
            example["labels"] = _label(row.get(label_column), label2id, f"{path}: row {i + 1}")
        examples.append(example)
    kind = type(model).__name__
    if label_column is None and kind.endswith(("ForCausalLM", "ForMaskedLM")):
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=kind.endswith("ForMaskedLM"))
    else:
        collator = DataCollatorWithPadding(tokenizer)
    return DataLoader(examples, batch_size=batch_size, shuffle=False, collate_fn=collator)


def task_inputs(task_name: str, samples: int, file: Optional[str] = None):
    """(task, data arguments, raw train split) for calibrating on a task's training data (or `file` in its format)."""
    provider = task_provider()
    task = provider.get_task(task_name)
    data = provider.DataArguments(task=task_name, max_train_samples=samples, train_file=file)
    raw = task.load_raw(data)
    if "train" not in raw:
        raise ValueError(f"task {task_name}: no training split to calibrate on")
    return task, data, raw


def task_dataloader(task, data, raw, tokenizer, model, *, batch_size: int) -> DataLoader:
    """Batches of a task's first training examples, preprocessed and collated by the task itself."""
    from datasets import DatasetDict

    train = task.preprocess(DatasetDict({"train": raw["train"]}), tokenizer, data, model)["train"]
    return DataLoader(train, batch_size=batch_size, shuffle=False, collate_fn=task.data_collator(tokenizer, model))
