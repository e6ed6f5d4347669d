"""Protein thermostability: HotProtein HP-S, HP-S2C5, HP-S2C2, Meltome Atlas, and the ThermoProt stand-in.

Sequence classification on amino-acid strings with an ESM tokenizer and `AutoModelForSequenceClassification`
(ESM-1b `facebook/esm1b_t33_650M_UR50S` in the paper; ESM-IF1 for HP-S2C5 is structure-based and has no
transformers port, so the sequence model stands in). Metric: accuracy (%).

Data sources, by flag:
- `--data_dir` with one FASTA per class (ThermoProt: `psychrophilic.fasta`, ...): a fixed, seeded, stratified
  80/10/10 train/validation/test split (`--split_seed`), recorded in `data_splits.json` beside the results.
- `--data_dir` in HotProtein's release form: FASTA file(s) plus a split file with `train_names`, `train_labels`,
  `test_names`, `test_labels`; evaluated on the test names as the paper does. The split file is the one `*.json` in
  the folder or `--split_file`. The release's `*.pkl` is read only when named with `--split_file` AND allowed with
  `--trust_pickle` (unpickling runs code from the file); a pickle found in the folder is never loaded.
- `--train_file/--validation_file`: CSV, TSV or JSON lines with `sequence` and `label` (Meltome: `target`, see below).
- `--dataset_name`: a Hub id or `save_to_disk` directory with `sequence` and `label` columns.

Sequences are upper-cased (soft-masked FASTA is lower-case) and must use the amino-acid alphabet: the 20 standard
residues and the IUPAC codes X, B, Z, J, U, O; any other character is refused with the record named. Tokenisation
follows the tokenizer: ESM-style tokenizers read the raw sequence, BERT-style residue vocabularies (e.g. antiberty)
read residues separated by spaces, and a tokenizer that lower-cases against an upper-case residue vocabulary is
reloaded with `do_lower_case=False` (otherwise "M K V L" is four unknown tokens).

Meltome Atlas (FLIP's `sequence,target,set,validation` CSV, `target` = melting temperature in degrees C) is framed,
as the paper's accuracy axis implies, as classification: Tm binned at `--label_thresholds` (default 60: the usual
"thermostable" cut; the paper does not state its bins). A single FLIP file is split by its `set` column.

Head (`--classifier_head`; a checkpoint saved with one of the two heads keeps it): `mean_mlp` (default) is the release's: the mean over residues of the last layer into
Linear(1280, 512)-LayerNorm-ReLU-Linear(512, C) (`protein_model.py`); `cls` is transformers' head (the `<cls>`
token, dense + tanh). Protocol as the paper's: evaluated every epoch on the test split and the best evaluation is
reported (`select_best_on`; the release evaluates every `eval_freq` steps, whose value it does not give: once per
epoch is this project's choice), the final one beside it.

Paper hyper-parameters (ESM-1b scripts, spec section 2.3): batch 3, 4 epochs, backbone lr 1e-6, AdamW with its
default weight decay 0.01, one-cycle schedule stepped once per epoch (here: cosine with 30% warm-up per step;
`--epoch_one_cycle True --lr_scheduler_type constant --warmup_steps 0` is the release's), sequences truncated to 1022
residues. The scripts pass a head lr of 2e-2 but never step the head's optimizer; here the head trains at 1e-3
(`--head_learning_rate`). TAPE (one HP-S panel) and ESM-IF1 are not here.
"""

from __future__ import annotations

import glob
import logging
import os
import pickle
from typing import Any, Optional

import numpy as np
from datasets import Dataset, DatasetDict

from .base import DataArguments, DataError, ModelArguments, TaskDefinition, load_hub_or_disk, limited_splits
from .epoch_schedule import EpochOneCycle
from .io import csv_rows, read_json, read_jsonl, text_lines
from .metrics import accuracy
from .protein_model import EsmMeanPoolForSequenceClassification

logger = logging.getLogger(__name__)

#: `--classifier_head` choices and the model class each saves as `architectures[0]`.
HEADS = {"mean_mlp": "EsmMeanPoolForSequenceClassification", "cls": "EsmForSequenceClassification"}


ESM_ALPHABET = (
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F",
    "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)  # the 33-token ESM-1b/ESM-2 vocabulary, in id order


#: One-letter amino-acid codes: the 20 standard residues, then X (any), B (D/N), Z (E/Q), J (I/L),
#: U (selenocysteine), O (pyrrolysine). ESM knows all but J; residue BERTs often only the 20.
AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY" + "XBZJUO")
#: Residues every protein tokenizer must know; the probe that picks how sequences are written for it.
STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def clean_sequence(sequence: str, where: str) -> str:
    """The sequence upper-cased (soft-masked lower case is the same residue); a DataError naming `where` and the
    characters if any is not an amino-acid code."""
    upper = sequence.upper()
    bad = sorted(set(upper) - AMINO_ACIDS)
    if bad:
        first = min(upper.index(c) for c in bad)
        raise DataError(f"{where}: character(s) {', '.join(repr(c) for c in bad)} are not amino-acid codes "
                        f"(first at residue {first + 1}); allowed: {''.join(sorted(AMINO_ACIDS))} in any case. "
                        f"Remove stop '*' and gap '-' symbols, or fix the record")
    return upper


def read_fasta(path: str) -> list[tuple[str, str]]:
    """(name, sequence) records; the name is the header line up to its end, without '>'; sequences upper-cased
    and checked by `clean_sequence`."""
    records: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(text_lines(path), 1):
        line = line.strip()
        if line.startswith(">"):
            records.append((line[1:].strip(), []))
        elif line:
            if not records:
                raise DataError(f"{path}:{lineno}: sequence data before the first '>' header")
            records[-1][1].append(line)
    out = [(name, "".join(parts)) for name, parts in records]
    empty = [name for name, seq in out if not seq]
    if empty:
        raise DataError(f"{path}: record(s) {empty[:3]} have an empty sequence")
    if not out:
        raise DataError(f"{path}: no FASTA records (empty split)")
    return [(name, clean_sequence(seq, f"{path} record {name!r}")) for name, seq in out]


def residue_format(tokenizer) -> Optional[str]:
    """How to write a sequence for `tokenizer`: "raw" (ESM, byte-level BPE) or "spaced" ("M K V L": BERT-style
    residue vocabularies); None if it has no token for some standard residue either way."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for fmt, text in (("raw", STANDARD_RESIDUES), ("spaced", " ".join(STANDARD_RESIDUES))):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids and (unk is None or unk not in ids):
            return fmt
    return None


def residue_text(sequence: str, fmt: str) -> str:
    return " ".join(sequence) if fmt == "spaced" else sequence


def read_table(path: str) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for a CSV, TSV or JSON-lines file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    if path.endswith((".json", ".jsonl")):
        return [(f"{path}:{lineno}", row) for lineno, row in read_jsonl(path)]
    reader = csv_rows(path, delimiter="\t" if path.endswith(".tsv") else ",")
    return [(f"{path}:{reader.line_num}", row) for row in reader]


def stratified_split(labels: list[int], seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, list[int]]:
    """Indices per split, stratified by class, from a seeded permutation: the same files always give the same split."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    labels_arr = np.asarray(labels)
    for label in sorted(set(labels)):
        members = np.flatnonzero(labels_arr == label)
        members = members[rng.permutation(len(members))]
        n_train = int(round(fractions[0] * len(members)))
        n_val = int(round(fractions[1] * len(members)))
        out["train"].extend(members[:n_train].tolist())
        out["validation"].extend(members[n_train:n_train + n_val].tolist())
        out["test"].extend(members[n_train + n_val:].tolist())
    # Classes interleaved in a seeded order: `--max_train_samples N` keeps the first N, which in class order
    # would be one class only.
    return {split: [idx[i] for i in rng.permutation(len(idx))] for split, idx in out.items()}


class ProteinTask(TaskDefinition):
    family = "protein"
    default_model = "facebook/esm1b_t33_650M_UR50S"
    auto_model = "AutoModelForSequenceClassification"
    metric_name = "accuracy"
    select_best_on = "accuracy"
    default_max_seq_length = 1024
    default_head_learning_rate = 1e-3
    num_labels = 2
    class_files: tuple[str, ...] = ()
    training_defaults = {
        "per_device_train_batch_size": 3, "num_train_epochs": 4, "learning_rate": 1e-6,
        "lr_scheduler_type": "cosine", "warmup_steps": 0.3, "weight_decay": 0.01, "update_every": 500,
        "seed": 1,
    }

    def __init__(self):
        self.split_record: Optional[dict[str, Any]] = None

    def data_record(self) -> Optional[dict[str, Any]]:
        return self.split_record

    def label_of(self, row: dict[str, Any], where: str, data: DataArguments) -> int:
        if "label" not in row:
            raise DataError(f"{where}: missing column 'label'")
        return self._check_label(row["label"], "label", where)

    def _check_label(self, value: Any, column: str, where: str) -> int:
        try:
            label = int(value)
        except (TypeError, ValueError):
            label = -1
        if not 0 <= label < self.num_labels or str(value).strip() not in (str(label), f"{label}.0"):
            raise DataError(f"{where}: unknown label {value!r} in column '{column}' (expected 0..{self.num_labels - 1})")
        return label

    def _example(self, row: dict[str, Any], where: str, data: DataArguments) -> dict[str, Any]:
        sequence = row.get("sequence")
        if not sequence:
            raise DataError(f"{where}: missing or empty column 'sequence'")
        return {"sequence": clean_sequence(str(sequence).strip(), where), "label": self.label_of(row, where, data)}

    def _from_rows(self, rows, source: str, data: DataArguments) -> Dataset:
        examples = [self._example(row, where, data) for where, row in rows]
        if not examples:
            raise DataError(f"{source}: no examples (empty split)")
        return Dataset.from_list(examples)

    def load_raw(self, data: DataArguments, cache_dir: Optional[str] = None) -> DatasetDict:
        if data.train_file or data.validation_file:
            splits = self._read_files(data)
        elif data.data_dir:
            splits = self._read_data_dir(data)
        elif data.dataset_name or self.hub_id:
            name = data.dataset_name or self.hub_id
            raw = load_hub_or_disk(name, data.dataset_config_name or self.hub_config, cache_dir)
            wanted = {"train": "train", "validation": "validation" if "validation" in raw else "test"}
            missing = [source for source in wanted.values() if source not in raw]
            if missing:
                raise DataError(f"{name}: no split(s) {missing} (has {list(raw)})")
            splits = {split: self._from_rows([(f"{name}[{source}] row {i}", r) for i, r in enumerate(raw[source])],
                                             f"{name}[{source}]", data) for split, source in wanted.items()}
        else:
            raise DataError(f"{self.name}: no Hub copy; pass --data_dir, --train_file or --dataset_name")
        return limited_splits(splits, data)

    def _read_files(self, data: DataArguments) -> dict[str, Dataset]:
        files = {"train": data.train_file, "validation": data.validation_file}
        return {split: self._from_rows(read_table(path), path, data) for split, path in files.items() if path}

    def _read_data_dir(self, data: DataArguments) -> dict[str, Dataset]:
        if data.split_file:
            return self._read_hotprotein(data, data.split_file)
        json_files = sorted(glob.glob(os.path.join(data.data_dir, "*.json")))
        if len(json_files) > 1:
            raise DataError(f"{data.data_dir}: {len(json_files)} JSON split files {json_files}; name one with --split_file")
        if json_files:
            return self._read_hotprotein(data, json_files[0])
        pickles = sorted(glob.glob(os.path.join(data.data_dir, "*.pkl")))
        if pickles:
            raise DataError(
                f"{data.data_dir}: the split file here is a pickle ({', '.join(pickles)}), which is never loaded "
                f"unless named: unpickling runs code from the file. If you trust it, pass --split_file {pickles[0]} "
                f"--trust_pickle; or write its train_names/train_labels/test_names/test_labels as JSON"
            )
        return self._read_class_fastas(data)

    def _read_class_fastas(self, data: DataArguments) -> dict[str, Dataset]:
        found = sorted(glob.glob(os.path.join(data.data_dir, "*.fasta")))
        stems = [os.path.splitext(os.path.basename(f))[0] for f in found]
        names = list(self.class_files) or stems
        missing = [n for n in names if n not in stems]
        if missing or not found:
            raise DataError(f"{data.data_dir}: missing class FASTA file(s) {missing or names} (found {stems})")
        if len(names) != self.num_labels:
            raise DataError(f"{data.data_dir}: {len(names)} class files for a {self.num_labels}-class task")
        ids, sequences, labels = [], [], []
        for label, stem in enumerate(names):
            for name, seq in read_fasta(os.path.join(data.data_dir, f"{stem}.fasta")):
                ids.append(f"{stem}.fasta:{name}")
                sequences.append(seq)
                labels.append(label)
        split = stratified_split(labels, data.split_seed)
        self.split_record = {"seed": data.split_seed, "classes": names,
                             **{s: [ids[i] for i in idx] for s, idx in split.items()}}
        return {s: Dataset.from_dict({"sequence": [sequences[i] for i in idx], "label": [labels[i] for i in idx]})
                for s, idx in split.items() if s != "test"}

    def _read_hotprotein(self, data: DataArguments, split_file: str) -> dict[str, Dataset]:
        data_dir = data.data_dir
        if not os.path.isfile(split_file):
            raise DataError(f"{split_file}: file not found (--split_file)")
        if split_file.endswith((".pkl", ".pickle")):
            if not data.trust_pickle:
                raise DataError(f"{split_file}: a pickle runs code when loaded; pass --trust_pickle to load it (only "
                                f"for a file you trust), or give the split as JSON")
            with open(split_file, "rb") as handle:
                split = pickle.load(handle)  # noqa: S301 (the user named the file and passed --trust_pickle)
        else:
            split = read_json(split_file)
        if not isinstance(split, dict):
            raise DataError(f"{split_file}: expected a mapping with train_names/train_labels/test_names/test_labels, "
                            f"got {type(split).__name__}")
        sequences: dict[str, str] = {}
        for fasta in sorted(glob.glob(os.path.join(data_dir, "*.fasta")) + glob.glob(os.path.join(data_dir, "*.fa"))):
            sequences.update(read_fasta(fasta))
        out = {}
        for split_name, prefix in (("train", "train"), ("validation", "test")):
            for key in (f"{prefix}_names", f"{prefix}_labels"):
                if key not in split:
                    raise DataError(f"{split_file}: missing column '{key}'")
            names, labels = list(split[f"{prefix}_names"]), list(split[f"{prefix}_labels"])
            if len(names) != len(labels):
                raise DataError(f"{split_file}: '{prefix}_names' and '{prefix}_labels' differ in length")
            rows = []
            for name, label in zip(names, labels):
                if name not in sequences:
                    raise DataError(f"{split_file}: '{prefix}_names' entry {name!r} has no sequence in the FASTA files")
                rows.append((f"{split_file} {prefix}_labels[{name}]", {"sequence": sequences[name], "label": label}))
            out[split_name] = self._from_rows(rows, f"{split_file} {prefix}", data)
        return out

    def load_tokenizer(self, model: ModelArguments):
        """The checkpoint's tokenizer, able to write every standard residue; a BERT-style tokenizer that lower-cases
        against an upper-case residue vocabulary (antiberty's default) is reloaded with `do_lower_case=False`."""
        from transformers import AutoTokenizer

        tokenizer = super().load_tokenizer(model)
        if residue_format(tokenizer) is not None:
            return tokenizer
        path = model.tokenizer_name or self.checkpoint(model)
        if getattr(tokenizer, "do_lower_case", False):
            cased = AutoTokenizer.from_pretrained(path, cache_dir=model.cache_dir, do_lower_case=False)
            if residue_format(cased) is not None:
                logger.warning("%s: tokenizer %s lower-cases but its residue vocabulary is upper-case; "
                               "loaded with do_lower_case=False", self.name, path)
                return cased
        probe = tokenizer.convert_ids_to_tokens(tokenizer(" ".join(STANDARD_RESIDUES))["input_ids"])
        raise DataError(f"{self.name}: tokenizer {type(tokenizer).__name__}({path!r}) has no token for amino-acid "
                        f"residues: '{' '.join(STANDARD_RESIDUES)}' -> {probe}; use a protein model's tokenizer "
                        f"(--tokenizer_name)")

    def load_model(self, model: ModelArguments, tokenizer, raw: DatasetDict):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        path = self.checkpoint(model)
        config = AutoConfig.from_pretrained(path, cache_dir=model.cache_dir)
        saved = {v: k for k, v in HEADS.items()}.get((getattr(config, "architectures", None) or [""])[0])
        head = model.classifier_head or saved or "mean_mlp"  # a classifier checkpoint keeps its own head
        if head not in HEADS:
            raise ValueError(f"{self.name}: unknown --classifier_head {head!r}; choose one of {list(HEADS)}")
        if saved is not None and saved != head:
            logger.warning("%s holds a trained '%s' head; --classifier_head %s starts a new one", path, saved, head)
        if head == "cls":
            return AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=self.num_labels, cache_dir=model.cache_dir
            )
        config.num_labels = self.num_labels
        config.residue_excluded_ids = sorted(tokenizer.all_special_ids)
        return EsmMeanPoolForSequenceClassification.from_pretrained(path, config=config, cache_dir=model.cache_dir)

    def preprocess(self, raw: DatasetDict, tokenizer, data: DataArguments, model) -> DatasetDict:
        max_length = data.max_seq_length or self.default_max_seq_length
        fmt = residue_format(tokenizer)
        if fmt is None:
            raise DataError(f"{self.name}: tokenizer {type(tokenizer).__name__}"
                            f"({getattr(tokenizer, 'name_or_path', '')!r}) cannot write the standard residues "
                            f"{STANDARD_RESIDUES} raw or space-separated without unknown tokens (a lower-casing "
                            f"tokenizer needs do_lower_case=False; `load_tokenizer` does this)")

        def encode(batch):
            texts = [residue_text(seq, fmt) for seq in batch["sequence"]]
            enc = tokenizer(texts, truncation=True, max_length=max_length)
            enc["label"] = batch["label"]
            return enc

        return DatasetDict({s: ds.map(encode, batched=True, remove_columns=ds.column_names) for s, ds in raw.items()})

    def data_collator(self, tokenizer, model):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def head_parameter_prefixes(self, model) -> tuple[str, ...]:
        return ("classifier",)

    def trainer_kwargs(self, model, model_args: ModelArguments, training_args) -> dict[str, Any]:
        """The two-rate optimizer, and with `--epoch_one_cycle` the release's per-epoch one-cycle rate on it."""
        kwargs = super().trainer_kwargs(model, model_args, training_args)
        if model_args.epoch_one_cycle:
            scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
            if scheduler != "constant" or training_args.warmup_steps:
                raise ValueError(
                    f"{self.name}: --epoch_one_cycle sets each epoch's rate itself over a constant schedule, but the "
                    f"schedule is {scheduler!r} with warmup_steps {training_args.warmup_steps}; pass "
                    "--lr_scheduler_type constant --warmup_steps 0 with it"
                )
            kwargs["callbacks"] = [EpochOneCycle(training_args.num_train_epochs)]
        return kwargs

    def compute_metrics(self, tokenizer, raw_eval: Dataset, model):
        def compute(eval_pred):
            logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
            return {"accuracy": accuracy(np.argmax(logits, axis=-1), eval_pred.label_ids)}

        return compute


class HotProteinS(ProteinTask):
    """HP-S: sequences labelled with five organism temperature classes."""

    name = "hp-s"
    num_labels = 5


class HotProteinS2C5(ProteinTask):
    """HP-S2C5: the structure-annotated subset, five classes (ESM-IF1 in the paper)."""

    name = "hp-s2c5"
    num_labels = 5


class HotProteinS2C2(ProteinTask):
    """HP-S2C2: the structure-annotated subset, two classes."""

    name = "hp-s2c2"
    num_labels = 2


class ThermoProt(ProteinTask):
    """ThermoProt's four growth-temperature classes, the stand-in for HotProtein (a sample in `data/protein/thermoprot`)."""

    name = "thermoprot"
    num_labels = 4
    class_files = ("psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic")


class Meltome(ProteinTask):
    """Meltome Atlas (FLIP layout), melting temperature binned into classes at `--label_thresholds`."""

    name = "meltome"
    default_thresholds = (60.0,)

    def thresholds(self, data: DataArguments) -> list[float]:
        if not data.label_thresholds:
            return list(self.default_thresholds)
        return sorted(float(x) for x in data.label_thresholds.split(","))

    def load_raw(self, data: DataArguments, cache_dir: Optional[str] = None) -> DatasetDict:
        self.num_labels = len(self.thresholds(data)) + 1
        return super().load_raw(data, cache_dir)

    def label_of(self, row, where, data):
        if "target" not in row:
            return super().label_of(row, where, data)
        try:
            tm = float(row["target"])
        except (TypeError, ValueError):
            raise DataError(f"{where}: column 'target' is not a temperature: {row['target']!r}") from None
        return int(np.searchsorted(self.thresholds(data), tm, side="right"))

    def _read_files(self, data: DataArguments) -> dict[str, Dataset]:
        if data.train_file and not data.validation_file:
            rows = read_table(data.train_file)
            if rows and "set" not in rows[0][1]:
                raise DataError(f"{data.train_file}: missing column 'set' (needed to split a single FLIP file)")
            by_set = {"train": [r for r in rows if r[1]["set"] == "train"],
                      "validation": [r for r in rows if r[1]["set"] == "test"]}
            return {s: self._from_rows(r, f"{data.train_file} set={s}", data) for s, r in by_set.items()}
        return super()._read_files(data)

    def _read_data_dir(self, data: DataArguments) -> dict[str, Dataset]:
        files = sorted(glob.glob(os.path.join(data.data_dir, "*.csv")))
        if not files:
            raise DataError(f"{data.data_dir}: no FLIP meltome CSV (e.g. mixed_split.csv)")
        return self._read_files(DataArguments(task=self.name, train_file=files[0], label_thresholds=data.label_thresholds))
