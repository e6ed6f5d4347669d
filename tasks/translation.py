"""Multilingual translation: many-to-many among 2, 5 or 10 languages with mBART (BLEU per direction and averaged).

Language codes are mBART-50's (`en_XX`, `de_DE`, ...). With an mBART-50 tokenizer (`src_lang`/`tgt_lang`),
a source is `[src_code] X </s>` and a target `[tgt_code] Y </s>`; generation forces the target code as the first
token (`forced_bos_token_id`) and uses beam search, one evaluation per direction. That forcing happens in the
final evaluation (`evaluate`); an in-training `--eval_strategy` generates without it, so its BLEU is not the
benchmark's (the defaults leave in-training evaluation off).

Data sources, by flag (short codes such as `de` are matched to the setting's full codes):
- `--train_file/--validation_file`: JSON lines `{"translation": {"en": "...", "de": "..."}}` (transformers'
  translation format); each line yields every direction between the setting's languages it contains.
- `--data_dir`: fairseq/ML50 raw text, `{train,valid}.{a}-{b}.{a}` and `.{b}` line-aligned files.
- `--dataset_name`: a Hub dataset with one configuration per pair named `a-b` and a `translation` column
  (OPUS-100's layout, the default), or a `save_to_disk` directory with one sub-directory per pair.

The paper names only the model ("mBART", fairseq) and the settings (2-to-2, 5-to-5, 10-to-10); its release has no
translation code, languages, data or recipe, so every choice below is this project's:
- model: `facebook/mbart-large-50`, the many-to-many mBART-50 on the Hub (the paper's fairseq mBART checkpoint is
  not named; mBART-25 is the likely one and has no many-to-many transformers port);
- languages: high-resource ML50 languages (override with `--languages`); data: OPUS-100;
- recipe: fairseq's mBART fine-tuning recipe: lr 3e-5, polynomial decay, 2500 warm-up of 40k updates, label
  smoothing 0.2, Adam (0.9, 0.98) eps 1e-6, dropout 0.3 and attention dropout 0.1 (`--dropout` sets the first),
  beam 5; its token-based batches (`--max-tokens 1024`, update-freq 2) are replaced by 16 sentence pairs per device
  step, since `Trainer` batches by examples;
- reporting: the final evaluation (no model selection: in-training generation lacks the forced language code).
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from typing import Optional

import numpy as np
from datasets import Dataset, DatasetDict

from .base import DataArguments, DataError, ModelArguments, TaskDefinition, load_hub_or_disk, limited_splits
from .io import field, nonempty, read_jsonl
from .metrics import bleu

LANGUAGE_SETS = {
    2: ("en_XX", "de_DE"),
    5: ("en_XX", "de_DE", "fr_XX", "es_XX", "cs_CZ"),
    10: ("en_XX", "de_DE", "fr_XX", "es_XX", "cs_CZ", "ru_RU", "zh_CN", "ja_XX", "ro_RO", "fi_FI"),
}
_SPLIT_NAMES = {"train": "train", "validation": "valid"}


class TranslationTask(TaskDefinition):
    family = "translation"
    hub_id = "Helsinki-NLP/opus-100"
    default_model = "facebook/mbart-large-50"
    auto_model = "AutoModelForSeq2SeqLM"
    metric_name = "bleu"
    seq2seq = True
    default_max_seq_length = 128
    n_languages = 2
    default_dropout = 0.3  # fairseq's mBART fine-tuning recipe
    default_attention_dropout = 0.1
    training_defaults = {
        "learning_rate": 3e-5, "lr_scheduler_type": "polynomial", "warmup_steps": 2500, "max_steps": 40000,
        "label_smoothing_factor": 0.2, "adam_beta1": 0.9, "adam_beta2": 0.98, "adam_epsilon": 1e-6,
        "weight_decay": 0.0, "per_device_train_batch_size": 16, "predict_with_generate": True,
        "generation_num_beams": 5, "generation_max_length": 128,
    }

    def __init__(self):
        self.languages: tuple[str, ...] = LANGUAGE_SETS[self.n_languages]

    def _configure(self, data: DataArguments) -> None:
        if data.languages:
            self.languages = tuple(code.strip() for code in data.languages.split(",") if code.strip())
        if len(self.languages) < 2:
            raise ValueError(f"{self.name}: needs at least two languages, got {self.languages}")

    def full_code(self, code: str) -> Optional[str]:
        """The setting's code for `code` (`de` -> `de_DE`), None if the language is not in the setting."""
        for full in self.languages:
            if code == full or code == full.split("_")[0]:
                return full
        return None

    def _rows_from_pairs(self, pairs: dict[str, str], where: str) -> list[dict[str, str]]:
        present = {}
        for code, text in pairs.items():
            full = self.full_code(code)
            if full is not None:
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{where}: empty text in column 'translation.{code}'")
                present[full] = text.strip()
        return [{"src_lang": s, "tgt_lang": t, "source": present[s], "target": present[t]}
                for s, t in itertools.permutations(sorted(present), 2)]

    def load_raw(self, data: DataArguments, cache_dir: Optional[str] = None) -> DatasetDict:
        self._configure(data)
        if data.train_file or data.validation_file:
            splits = {split: self._read_jsonl(path) for split, path in
                      (("train", data.train_file), ("validation", data.validation_file)) if path}
        elif data.data_dir:
            splits = {split: self._read_fairseq_dir(data.data_dir, name) for split, name in _SPLIT_NAMES.items()}
        else:
            splits = self._read_hub(data.dataset_name or self.hub_id, cache_dir)
        out = {"train": Dataset.from_list(splits["train"])} if "train" in splits else {}
        for direction, rows in self._by_direction(splits.get("validation", [])).items():
            out[direction] = Dataset.from_list(rows)
        return limited_splits(out, data)

    def _by_direction(self, rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
        grouped: dict[str, list] = {}
        for row in rows:
            grouped.setdefault(f"{row['src_lang']}-{row['tgt_lang']}", []).append(row)
        return dict(sorted(grouped.items()))

    def _read_jsonl(self, path: str) -> list[dict[str, str]]:
        rows = []
        for lineno, record in read_jsonl(path):
            pairs = field(record, "translation", f"{path}:{lineno}")
            rows.extend(self._rows_from_pairs(pairs, f"{path}:{lineno}"))
        return nonempty(rows, f"{path} (no sentence pair between {', '.join(self.languages)})")

    def _read_fairseq_dir(self, data_dir: str, split: str) -> list[dict[str, str]]:
        rows = []
        pattern = re.compile(rf"^{split}\.([^.]+)-([^.]+)\.([^.]+)$")
        for path in sorted(glob.glob(os.path.join(data_dir, f"{split}.*-*.*"))):
            match = pattern.match(os.path.basename(path))
            if not match or match.group(3) != match.group(1):
                continue
            a, b = match.group(1), match.group(2)
            other = os.path.join(data_dir, f"{split}.{a}-{b}.{b}")
            if not os.path.isfile(other):
                raise DataError(f"{path}: no target side {other}")
            with open(path, encoding="utf-8") as fa, open(other, encoding="utf-8") as fb:
                left, right = fa.read().splitlines(), fb.read().splitlines()
            if len(left) != len(right):
                raise DataError(f"{path} and {other}: {len(left)} and {len(right)} lines (must be aligned)")
            for lineno, (x, y) in enumerate(zip(left, right), 1):
                rows.extend(self._rows_from_pairs({a: x, b: y}, f"{path}:{lineno}"))
        return nonempty(rows, f"{data_dir}: {split} split ({split}.xx-yy.xx files between {', '.join(self.languages)})")

    def _read_hub(self, name: str, cache_dir) -> dict[str, list[dict[str, str]]]:
        splits: dict[str, list] = {"train": [], "validation": []}
        for a, b in itertools.combinations(self.languages, 2):
            short = (a.split("_")[0], b.split("_")[0])
            configs = [f"{short[0]}-{short[1]}", f"{short[1]}-{short[0]}"]
            local = [c for c in configs if os.path.isdir(os.path.join(name, c))]
            config = local[0] if local else ("-".join(sorted(short)))
            raw = load_hub_or_disk(name, config, cache_dir)
            for split in splits:
                source = split if split in raw else "test" if split == "validation" and "test" in raw else None
                if source is None:
                    raise DataError(f"{name}/{config}: no '{split}' split (has {list(raw)})")
                for i, record in enumerate(raw[source]):
                    where = f"{name}/{config}[{source}] row {i}"
                    splits[split].extend(self._rows_from_pairs(field(record, "translation", where), where))
        return {s: nonempty(rows, f"{name}: {s}") for s, rows in splits.items()}

    def load_model(self, model: ModelArguments, tokenizer, raw: DatasetDict):
        from transformers import AutoModelForSeq2SeqLM

        dropout = self.default_dropout if model.dropout is None else model.dropout
        return AutoModelForSeq2SeqLM.from_pretrained(
            self.checkpoint(model), cache_dir=model.cache_dir, dropout=dropout,
            attention_dropout=self.default_attention_dropout,
        )

    def lang_id(self, tokenizer, code: str) -> int:
        token_id = tokenizer.convert_tokens_to_ids(code)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no language code token {code!r}")
        return token_id

    def preprocess(self, raw: DatasetDict, tokenizer, data: DataArguments, model) -> DatasetDict:
        if not hasattr(tokenizer, "src_lang"):
            raise ValueError(f"{self.name}: needs an mBART-50 style tokenizer with src_lang/tgt_lang")
        max_length = data.max_seq_length or self.default_max_seq_length
        max_target = data.max_target_length or max_length

        def encode(batch):
            out: dict[str, list] = {"input_ids": [None] * len(batch["source"]),
                                    "attention_mask": [None] * len(batch["source"]),
                                    "labels": [None] * len(batch["source"])}
            directions = sorted(set(zip(batch["src_lang"], batch["tgt_lang"])))
            for src, tgt in directions:
                idx = [i for i, d in enumerate(zip(batch["src_lang"], batch["tgt_lang"])) if d == (src, tgt)]
                tokenizer.src_lang, tokenizer.tgt_lang = src, tgt
                enc = tokenizer([batch["source"][i] for i in idx], truncation=True, max_length=max_length)
                labels = tokenizer(text_target=[batch["target"][i] for i in idx], truncation=True,
                                   max_length=max_target)["input_ids"]
                for j, i in enumerate(idx):
                    out["input_ids"][i], out["attention_mask"][i] = enc["input_ids"][j], enc["attention_mask"][j]
                    out["labels"][i] = labels[j]
            return out

        return DatasetDict({s: ds.map(encode, batched=True, remove_columns=ds.column_names) for s, ds in raw.items()})

    def data_collator(self, tokenizer, model):
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def compute_metrics(self, tokenizer, raw_eval: Dataset, model):
        def compute(eval_pred):
            preds = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            preds = np.where(preds < 0, tokenizer.pad_token_id, preds)
            labels = np.where(eval_pred.label_ids < 0, tokenizer.pad_token_id, eval_pred.label_ids)
            hyps = [t.strip() for t in tokenizer.batch_decode(preds, skip_special_tokens=True)]
            refs = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
            return {"bleu": bleu(hyps, refs)}

        return compute

    def evaluate(self, trainer, eval_sets: dict[str, Dataset]) -> dict[str, float]:
        """One generation pass per direction, forcing its target code; `eval_bleu` averages the directions."""
        tokenizer = trainer.processing_class
        metrics: dict[str, float] = {}
        for direction, data in eval_sets.items():
            tgt = direction.split("-", 1)[1]
            metrics.update(trainer.evaluate(
                eval_dataset=data, metric_key_prefix=f"eval_{direction}",
                forced_bos_token_id=self.lang_id(tokenizer, tgt),
                num_beams=trainer.args.generation_num_beams, max_length=trainer.args.generation_max_length,
            ))
        metrics["eval_bleu"] = float(np.mean([metrics[f"eval_{d}_bleu"] for d in eval_sets]))
        return metrics


class Translation2to2(TranslationTask):
    name = "translation-2to2"
    n_languages = 2


class Translation5to5(TranslationTask):
    name = "translation-5to5"
    n_languages = 5


class Translation10to10(TranslationTask):
    name = "translation-10to10"
    n_languages = 10
