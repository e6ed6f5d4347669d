"""Protein: FASTA, HotProtein and FLIP readers, the seeded stratified split, label errors, the ESM alphabet."""

from __future__ import annotations

import json
import os

import pytest

from tasks import DataArguments, DataError, get_task
from transformers import AutoTokenizer

from tasks.protein import read_fasta, stratified_split
from tests.task_fixtures import protein_sequences, tiny_esm_dir, write_fasta

THERMOPROT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                          "protein", "thermoprot")


def test_read_fasta_joins_lines_and_rejects_bad_files(tmp_path):
    path = tmp_path / "a.fasta"
    path.write_text(">p1 desc\nMKV\nLLA\n>p2\nGG\n")
    assert read_fasta(str(path)) == [("p1 desc", "MKVLLA"), ("p2", "GG")]
    path.write_text("MKV\n>p1\nA\n")
    with pytest.raises(DataError, match=r"a\.fasta:1: sequence data before the first '>' header"):
        read_fasta(str(path))
    path.write_text(">p1\n>p2\nA\n")
    with pytest.raises(DataError, match=r"a\.fasta: record\(s\) \['p1'\] have an empty sequence"):
        read_fasta(str(path))


def test_stratified_split_is_seeded_and_per_class():
    labels = [0] * 10 + [1] * 20
    split = stratified_split(labels, seed=1)
    assert split == stratified_split(labels, seed=1) and split != stratified_split(labels, seed=2)
    counts = {s: (sum(labels[i] == 0 for i in idx), sum(labels[i] == 1 for i in idx)) for s, idx in split.items()}
    assert counts == {"train": (8, 16), "validation": (1, 2), "test": (1, 2)}
    assert sorted(i for idx in split.values() for i in idx) == list(range(30))


def test_real_thermoprot_split():
    task = get_task("thermoprot")
    data = task.load_raw(DataArguments(task="thermoprot", data_dir=THERMOPROT))
    assert (len(data["train"]), len(data["validation"])) == (25600, 3200)
    assert data["validation"].to_pandas()["label"].value_counts().to_dict() == {0: 800, 1: 800, 2: 800, 3: 800}
    record = task.data_record()
    assert record["classes"] == ["psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic"]
    assert len(record["test"]) == 3200 and not set(record["test"]) & set(record["train"])


def _hotprotein_dir(tmp_path, test_labels):
    write_fasta(str(tmp_path / "seqs.fasta"), protein_sequences(4, "AGKE"))
    split = {"train_names": ["Sequence 1", "Sequence 2"], "train_labels": [0, 1],
             "test_names": ["Sequence 3", "Sequence 4"], "test_labels": test_labels}
    (tmp_path / "split.json").write_text(json.dumps(split))
    return str(tmp_path)


def test_hotprotein_release_layout(tmp_path):
    data = get_task("hp-s2c2").load_raw(DataArguments(task="hp-s2c2", data_dir=_hotprotein_dir(tmp_path, [1, 0])))
    assert data["validation"]["label"] == [1, 0]
    assert data["validation"][0]["sequence"] == protein_sequences(4, "AGKE")[2]


def test_hotprotein_unknown_label_names_file_and_column(tmp_path):
    with pytest.raises(DataError, match=r"split\.json test_labels\[Sequence 4\]: unknown label 7 in column 'label'"):
        get_task("hp-s2c2").load_raw(DataArguments(task="hp-s2c2", data_dir=_hotprotein_dir(tmp_path, [1, 7])))


def test_table_missing_sequence_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("seq,label\nMKV,1\n")
    with pytest.raises(DataError, match=r"train\.csv:2: missing or empty column 'sequence'"):
        get_task("hp-s").load_raw(DataArguments(task="hp-s", train_file=str(path)))


def test_meltome_flip_file_binned_by_thresholds(tmp_path):
    path = tmp_path / "mixed_split.csv"
    path.write_text("sequence,target,set,validation\nMKV,45.0,train,False\nMKL,61.5,train,True\n"
                    "MKA,75.0,test,\nMKG,59.9,test,\n")
    default = get_task("meltome").load_raw(DataArguments(task="meltome", train_file=str(path)))
    assert default["train"]["label"] == [0, 1] and default["validation"]["label"] == [1, 0]
    three = get_task("meltome").load_raw(DataArguments(task="meltome", data_dir=str(tmp_path), label_thresholds="50,70"))
    assert three["train"]["label"] == [0, 1] and three["validation"]["label"] == [2, 1]


def test_esm_tokenizer_uses_the_esm_alphabet(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_esm_dir(str(tmp_path / "esm")))
    assert tokenizer("MKVX")["input_ids"] == [0, 20, 15, 7, 24, 2]


def test_release_head_mean_pools_residues_into_an_mlp(tmp_path):
    import torch
    from torch import nn

    from tasks import ModelArguments
    from tasks.protein_model import EsmMeanPoolForSequenceClassification

    task = get_task("hp-s")
    path = tiny_esm_dir(str(tmp_path / "esm"), pretrained=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = task.load_model(ModelArguments(model_name_or_path=path), tokenizer, None).eval()
    assert isinstance(model, EsmMeanPoolForSequenceClassification)
    head = model.classifier
    hidden = model.config.hidden_size
    assert [type(m) for m in head.children()] == [nn.Linear, nn.LayerNorm, nn.Linear]
    assert (head.dense.in_features, head.dense.out_features, head.norm.normalized_shape, head.out_proj.out_features) \
        == (hidden, 512, (512,), 5)
    assert task.default_training_arguments()["weight_decay"] == 0.01
    short, long = tokenizer(["MKTAY"]), tokenizer(["MKTAYLLLAG"])
    batch = tokenizer(["MKTAY", "MKTAYLLLAG"], padding=True, return_tensors="pt")
    with torch.no_grad():
        both = model(**batch).logits
        alone = model(**{k: torch.tensor(v) for k, v in short.items()}).logits
        states = model.esm(torch.tensor(long["input_ids"])).last_hidden_state[0, 1:-1]  # residues only
        direct = head.out_proj(torch.relu(head.norm(head.dense(states.mean(0)))))
    assert torch.allclose(both[0], alone[0], atol=1e-5)  # padding and special tokens are not in the mean
    assert torch.allclose(both[1], direct, atol=1e-5)
    cls_model = task.load_model(ModelArguments(model_name_or_path=path, classifier_head="cls"), tokenizer, None)
    assert type(cls_model).__name__ == "EsmForSequenceClassification"
