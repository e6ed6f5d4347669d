"""Translation: direction expansion, fairseq layout, mBART-50 language-code encoding and per-direction BLEU."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer, EvalPrediction

from tasks import DataArguments, DataError, get_task
from tests.task_fixtures import TRANSLATION_PAIRS, tiny_mbart_dir, write_jsonl


def _jsonl(tmp_path, rows):
    return write_jsonl(str(tmp_path / "data.jsonl"), [{"translation": r} for r in rows])


def test_lines_expand_to_every_direction_of_the_setting(tmp_path):
    path = _jsonl(tmp_path, [{"en": "hi", "de": "hallo", "fr": "salut"}])
    two = get_task("translation-2to2").load_raw(DataArguments(task="translation-2to2", validation_file=path))
    assert sorted(two) == ["de_DE-en_XX", "en_XX-de_DE"]
    assert two["en_XX-de_DE"][0] == {"src_lang": "en_XX", "tgt_lang": "de_DE", "source": "hi", "target": "hallo"}
    five = get_task("translation-5to5").load_raw(DataArguments(task="translation-5to5", validation_file=path))
    assert len(five) == 6
    chosen = get_task("translation-2to2").load_raw(
        DataArguments(task="translation-2to2", validation_file=path, languages="fr_XX,de_DE"))
    assert sorted(chosen) == ["de_DE-fr_XX", "fr_XX-de_DE"]


def test_empty_text_names_the_column(tmp_path):
    path = _jsonl(tmp_path, [{"en": "hi", "de": " "}])
    with pytest.raises(DataError, match=r"data\.jsonl:1: empty text in column 'translation\.de'"):
        get_task("translation-2to2").load_raw(DataArguments(task="translation-2to2", train_file=path))


def test_fairseq_layout_and_alignment_check(tmp_path):
    for split in ("train", "valid"):
        (tmp_path / f"{split}.de-en.de").write_text("hallo\nwelt\n")
        (tmp_path / f"{split}.de-en.en").write_text("hello\nworld\n")
    data = get_task("translation-2to2").load_raw(DataArguments(task="translation-2to2", data_dir=str(tmp_path)))
    assert len(data["train"]) == 4 and data["de_DE-en_XX"]["target"] == ["hello", "world"]
    (tmp_path / "valid.de-en.en").write_text("hello\n")
    with pytest.raises(DataError, match="2 and 1 lines"):
        get_task("translation-2to2").load_raw(DataArguments(task="translation-2to2", data_dir=str(tmp_path)))


def test_mbart50_encoding_puts_language_codes_first(tmp_path):
    task = get_task("translation-2to2")
    tokenizer = AutoTokenizer.from_pretrained(
        tiny_mbart_dir(str(tmp_path / "mbart"), [t for pair in TRANSLATION_PAIRS for t in pair]))
    path = _jsonl(tmp_path, [{"en": "the cat sleeps", "de": "die katze schläft"}])
    args = DataArguments(task="translation-2to2", train_file=path)
    encoded = task.preprocess(task.load_raw(args), tokenizer, args, model=None)["train"]
    en, de = tokenizer.convert_tokens_to_ids("en_XX"), tokenizer.convert_tokens_to_ids("de_DE")
    rows = {(r["input_ids"][0], r["labels"][0]) for r in encoded}
    assert rows == {(de, en), (en, de)}
    assert all(r["input_ids"][-1] == tokenizer.eos_token_id and len(r["labels"]) == 5 for r in encoded)


def test_bleu_metric_on_hand_made_predictions(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(
        tiny_mbart_dir(str(tmp_path / "mbart"), [t for pair in TRANSLATION_PAIRS for t in pair]))
    tokenizer.tgt_lang = "de_DE"
    targets = ["die katze schläft und die sonne scheint", "der hund läuft und ein vogel singt"]
    labels = np.array(tokenizer(text_target=targets)["input_ids"])
    compute = get_task("translation-2to2").compute_metrics(tokenizer, None, None)
    assert compute(EvalPrediction(predictions=labels, label_ids=labels))["bleu"] == pytest.approx(100.0)
    wrong = np.where(labels == labels[0, 1], tokenizer.pad_token_id, labels)
    assert compute(EvalPrediction(predictions=wrong, label_ids=labels))["bleu"] < 100.0
