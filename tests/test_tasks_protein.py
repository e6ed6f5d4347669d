"""Protein: FASTA, HotProtein and FLIP readers, the seeded stratified split, label errors, the ESM alphabet."""

from __future__ import annotations

import json
import os

import pytest

from tasks import DataArguments, DataError, get_task
from transformers import AutoTokenizer

from tasks.protein import read_fasta, stratified_split
from tests.task_fixtures import protein_sequences, tiny_esm_dir, write_fasta

THERMOPROT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "protein", "thermoprot")


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
    assert (len(data["train"]), len(data["validation"])) == (3200, 400)  # the repository's 1,000 per class
    assert data["validation"].to_pandas()["label"].value_counts().to_dict() == {0: 100, 1: 100, 2: 100, 3: 100}
    record = task.data_record()
    assert record["classes"] == ["psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic"]
    assert len(record["test"]) == 400 and not set(record["test"]) & set(record["train"])
    # --max_train_samples keeps the first N: they must hold every class, not the first class file's sequences.
    first = task.load_raw(DataArguments(task="thermoprot", data_dir=THERMOPROT, max_train_samples=200))["train"]
    counts = first.to_pandas()["label"].value_counts().to_dict()
    assert len(first) == 200 and set(counts) == {0, 1, 2, 3} and min(counts.values()) >= 30, counts


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


REPO_THERMOPROT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "protein",
                               "thermoprot")


class _RunsCode:
    """Unpickling this makes a directory: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _pickle_dir(tmp_path):
    import pickle

    write_fasta(str(tmp_path / "seqs.fasta"), protein_sequences(4, "AGKE"))
    marker = str(tmp_path / "pickle-ran")
    with open(tmp_path / "split.pkl", "wb") as handle:
        pickle.dump(_RunsCode(marker), handle)
    return str(tmp_path), marker


def test_stray_pickle_in_data_dir_is_never_loaded(tmp_path):
    data_dir, marker = _pickle_dir(tmp_path)
    with pytest.raises(DataError, match=r"split\.pkl.*--split_file .*split\.pkl --trust_pickle"):
        get_task("hp-s2c2").load_raw(DataArguments(task="hp-s2c2", data_dir=data_dir))
    assert not os.path.exists(marker)


def test_named_pickle_needs_the_trust_flag(tmp_path):
    import pickle

    data_dir, marker = _pickle_dir(tmp_path)
    args = DataArguments(task="hp-s2c2", data_dir=data_dir, split_file=os.path.join(data_dir, "split.pkl"))
    with pytest.raises(DataError, match=r"split\.pkl: .*--trust_pickle"):
        get_task("hp-s2c2").load_raw(args)
    assert not os.path.exists(marker)
    split = {"train_names": ["Sequence 1", "Sequence 2"], "train_labels": [0, 1],
             "test_names": ["Sequence 3"], "test_labels": [1]}
    with open(tmp_path / "split.pkl", "wb") as handle:
        pickle.dump(split, handle)
    args.trust_pickle = True
    data = get_task("hp-s2c2").load_raw(args)
    assert data["train"]["label"] == [0, 1] and data["validation"]["label"] == [1]


def _class_dir(tmp_path, sequences):
    os.makedirs(tmp_path, exist_ok=True)
    for stem in ("psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic"):
        write_fasta(str(tmp_path / f"{stem}.fasta"), sequences)
    return str(tmp_path)


def test_lowercase_fasta_is_upper_cased_and_tokenised_per_residue(tmp_path):
    from transformers import AutoTokenizer

    data_dir = _class_dir(tmp_path / "data", [s.lower() for s in protein_sequences(10, "AGKE")])
    raw = get_task("thermoprot").load_raw(DataArguments(task="thermoprot", data_dir=data_dir))
    assert all(seq.isupper() for seq in raw["train"]["sequence"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_esm_dir(str(tmp_path / "esm")))
    encoded = get_task("thermoprot").preprocess(raw, tokenizer, DataArguments(task="thermoprot"), None)
    first = encoded["train"][0]["input_ids"]
    assert tokenizer.unk_token_id not in first and len(first) == len(raw["train"][0]["sequence"]) + 2


@pytest.mark.parametrize("sequence, bad", [("MKV1LA", "'1'"), ("MKVL*", r"'\*'"), ("MK-VL", "'-'")])
def test_invalid_residue_names_file_and_record(tmp_path, sequence, bad):
    data_dir = _class_dir(tmp_path, protein_sequences(10, "AGKE"))
    with open(os.path.join(data_dir, "mesophilic.fasta"), "a", encoding="utf-8") as handle:
        handle.write(f">odd one\n{sequence}\n")
    with pytest.raises(DataError, match=rf"mesophilic\.fasta record 'odd one': .*{bad}"):
        get_task("thermoprot").load_raw(DataArguments(task="thermoprot", data_dir=data_dir))


def test_table_sequences_are_upper_cased_and_checked(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sequence,label\nmkvl,1\nMKxA,0\n")
    data = get_task("hp-s2c2").load_raw(DataArguments(task="hp-s2c2", train_file=str(path)))
    assert data["train"]["sequence"] == ["MKVL", "MKXA"]
    path.write_text("sequence,label\nMKVL,1\nMK VL,0\n")
    with pytest.raises(DataError, match=r"train\.csv:3: .*' '"):
        get_task("hp-s2c2").load_raw(DataArguments(task="hp-s2c2", train_file=str(path)))


def test_real_thermoprot_sequences_are_all_valid():
    for stem in ("psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic"):
        records = read_fasta(os.path.join(REPO_THERMOPROT, f"{stem}.fasta"))
        assert len(records) == 1000 and all(seq.isupper() and seq.isalpha() for _, seq in records)


def test_non_utf8_fasta_names_file_and_offset(tmp_path):
    path = tmp_path / "bad.fasta"
    path.write_bytes(b">p1\nMKV\n>p2\nMK\xe9V\n")
    with pytest.raises(DataError, match=r"bad\.fasta: not UTF-8 text \(byte 14, line 4\)"):
        read_fasta(str(path))


RESIDUE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("ACDEFGHIKLMNPQRSTVWY")


def _bert_residue_dir(path, vocab_lines):
    """A BERT checkpoint folder as protein BERTs ship it: upper-case residue vocab, no tokenizer config."""
    from transformers import BertConfig, BertForSequenceClassification

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(vocab_lines) + "\n")
    config = BertConfig(vocab_size=len(vocab_lines), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=4)
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def _check_residue_tokenizer(model_dir, vocab_lines, tmp_path):
    from tasks import ModelArguments

    task = get_task("thermoprot")
    tokenizer = task.load_tokenizer(ModelArguments(model_name_or_path=model_dir))
    expected = [vocab_lines.index(t) for t in ("[CLS]", "M", "K", "V", "L", "[SEP]")]
    data_dir = _class_dir(tmp_path / "data", ["mkvl" * 5] * 10)
    raw = task.load_raw(DataArguments(task="thermoprot", data_dir=data_dir))
    encoded = task.preprocess(raw, tokenizer, DataArguments(task="thermoprot", max_seq_length=6), None)
    assert encoded["train"][0]["input_ids"] == expected
    task.check_inputs(encoded["train"], tokenizer)
    tokenizer.save_pretrained(str(tmp_path / "saved"))
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(tmp_path / "saved"))("M K V L")["input_ids"] == expected


def test_bert_residue_tokenizer_keeps_case(tmp_path):
    model_dir = _bert_residue_dir(str(tmp_path / "bert"), RESIDUE_VOCAB)
    _check_residue_tokenizer(model_dir, RESIDUE_VOCAB, tmp_path)


def test_antiberty_vocab_tokenises_residues(tmp_path):
    import importlib.util

    spec = importlib.util.find_spec("antiberty")
    vocab_file = spec and os.path.join(os.path.dirname(spec.origin), "trained_models", "vocab.txt")
    if not vocab_file or not os.path.isfile(vocab_file):
        pytest.skip("antiberty with its vocab.txt is not installed")
    with open(vocab_file, encoding="utf-8") as handle:
        vocab_lines = [line.strip() for line in handle if line.strip()]
    model_dir = _bert_residue_dir(str(tmp_path / "antiberty"), vocab_lines)
    _check_residue_tokenizer(model_dir, vocab_lines, tmp_path)


def test_tokenizer_without_residues_is_refused(tmp_path):
    from tasks import ModelArguments

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat"]
    model_dir = _bert_residue_dir(str(tmp_path / "words"), vocab)
    with pytest.raises(DataError, match=r"thermoprot: tokenizer .*words.* has no token for amino-acid residues"):
        get_task("thermoprot").load_tokenizer(ModelArguments(model_name_or_path=model_dir))
