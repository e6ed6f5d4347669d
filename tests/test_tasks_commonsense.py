"""Commonsense: CSQA, WinoGrande and RACE readers (authors' and Hub layouts), their errors and the MC encoding."""

from __future__ import annotations

import json
import os

import pytest

from tasks import DataArguments, DataError, get_task
from tests.task_fixtures import csqa_rows, roberta_tokenizer, winogrande_rows, write_jsonl, write_race_dir

CSQA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "commonsense", "csqa")


def test_csqa_official_and_hub_records_normalise_alike():
    task = get_task("csqa")
    official = task.normalise_record(csqa_rows(3)[2], "f:1")
    hub = task.normalise_record({"question": "Where is money kept 2?", "answerKey": "C",
                                 "choices": {"label": list("ABCDE"), "text": ["bank", "library", "store", "mall",
                                                                              "park"]}}, "hub row 0")
    assert official == hub
    assert official["first"] == ["Q: Where is money kept 2?"] * 5
    assert official["second"] == ["A: bank", "A: library", "A: store", "A: mall", "A: park"]
    assert official["label"] == 2


def test_csqa_real_dev_file():
    data = get_task("csqa").load_raw(DataArguments(task="csqa", data_dir=CSQA, max_train_samples=10))
    assert len(data["validation"]) == 1221 and len(data["train"]) == 10
    assert data["validation"][0]["second"][0] == "A: bank" and data["validation"][0]["label"] == 0


def test_csqa_unknown_label_and_missing_column(tmp_path):
    rows = csqa_rows(3)
    rows[1]["answerKey"] = "F"
    path = write_jsonl(str(tmp_path / "train.jsonl"), rows)
    with pytest.raises(DataError, match=r"train\.jsonl:2 \(id q1\): unknown label 'F' in column 'answerKey'"):
        get_task("csqa").load_raw(DataArguments(task="csqa", train_file=path))
    del rows[1]["question"]["stem"]
    rows[1]["answerKey"] = "A"
    path = write_jsonl(str(tmp_path / "dev.jsonl"), rows)
    with pytest.raises(DataError, match=r"dev\.jsonl:2 \(id q1\): missing column 'question\.stem'"):
        get_task("csqa").load_raw(DataArguments(task="csqa", validation_file=path))


def test_empty_split_names_the_file(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match=r"dev\.jsonl: no examples \(empty split\)"):
        get_task("winogrande").load_raw(DataArguments(task="winogrande", validation_file=str(path)))


def test_winogrande_fills_the_blank():
    task = get_task("winogrande")
    row = task.normalise_record(winogrande_rows(2)[1], "w:2")
    assert row["first"] == ["The cup did not fit in the bag because the cup", "The cup did not fit in the bag because the bag"]
    assert row["second"] == ["was too big.", "was too big."] and row["label"] == 1
    with pytest.raises(DataError, match="unknown label '3' in column 'answer'"):
        task.normalise_record({**winogrande_rows(1)[0], "answer": "3"}, "w:1")


def test_race_release_layout(tmp_path):
    root = write_race_dir(str(tmp_path / "RACE"))
    data = get_task("race").load_raw(DataArguments(task="race", data_dir=root))
    assert {k: len(v) for k, v in data.items()} == {"train": 8, "dev": 8, "middle": 4, "high": 4}
    cloze = data["middle"][1]
    assert cloze["second"][1] == "Tom has a blue kite." and cloze["label"] == 1
    assert data["middle"][0]["second"][0] == "What colour is the ball? red"


def test_multiple_choice_encoding_keeps_choices_together(tmp_path):
    task = get_task("csqa")
    tokenizer = roberta_tokenizer(["Q: Where is money kept? A: bank library store mall park"], str(tmp_path / "tok"))
    raw = task.load_raw(DataArguments(task="csqa", train_file=write_jsonl(str(tmp_path / "t.jsonl"), csqa_rows(2))))
    encoded = task.preprocess(raw, tokenizer, DataArguments(task="csqa"), model=None)["train"]
    assert len(encoded) == 2 and len(encoded[0]["input_ids"]) == 5 and encoded[1]["label"] == 1
    first_choice = tokenizer.decode(encoded[0]["input_ids"][0], skip_special_tokens=True)
    assert "Q: Where is money kept 0?" in first_choice and first_choice.endswith("A: bank")


def test_race_hub_path_trains_on_all_and_evaluates_levels(tmp_path):
    from datasets import Dataset, DatasetDict

    def rows(level, n):
        return [{"example_id": f"{level}{i}", "article": f"{level} text", "question": "Which?",
                 "options": ["a", "b", "c", "d"], "answer": "ABCD"[i % 4]} for i in range(n)]

    hub = tmp_path / "race"
    for config, n in (("all", 5), ("middle", 2), ("high", 3)):
        DatasetDict({"train": Dataset.from_list(rows(config, n)), "validation": Dataset.from_list(rows(config, n - 1)),
                     "test": Dataset.from_list(rows(config, n))}).save_to_disk(str(hub / config))
    data = get_task("race").load_raw(DataArguments(task="race", dataset_name=str(hub)))
    assert {k: len(v) for k, v in data.items()} == {"train": 5, "dev": 4, "middle": 2, "high": 3}
    assert data["high"][2]["label"] == 2 and data["high"][0]["first"] == ["high text"] * 4


def test_race_selects_on_dev_and_pools_the_test_levels():
    task = get_task("race")
    defaults = task.default_training_arguments()
    assert defaults["metric_for_best_model"] == "dev_accuracy" and defaults["load_best_model_at_end"] is True
    sets = {"dev": [0] * 5, "middle": [0] * 1, "high": [0] * 3}
    pooled = task.complete_metrics({"eval_dev_accuracy": 10.0, "eval_middle_accuracy": 100.0,
                                    "eval_high_accuracy": 0.0}, sets)
    assert pooled["eval_accuracy"] == 25.0 and pooled["eval_dev_accuracy"] == 10.0
    assert task.complete_metrics({"eval_dev_accuracy": 40.0}, {"dev": [0]})["eval_accuracy"] == 40.0


def test_commonsense_and_protein_select_the_best_epoch_translation_reports_the_final():
    for name, metric in (("csqa", "accuracy"), ("winogrande", "accuracy"), ("mawps", "answer_accuracy"),
                         ("svamp", "answer_accuracy"), ("hp-s", "accuracy")):
        defaults = get_task(name).default_training_arguments()
        assert (defaults["eval_strategy"], defaults["save_strategy"], defaults["metric_for_best_model"],
                defaults["load_best_model_at_end"]) == ("epoch", "epoch", metric, True), name
    assert "load_best_model_at_end" not in get_task("translation-2to2").default_training_arguments()
    # A command that sets the evaluation protocol owns all of it.
    given = get_task("csqa").default_training_arguments(given={"save_strategy"})
    assert not {"eval_strategy", "load_best_model_at_end", "metric_for_best_model"} & set(given)


def _hub_record(labels, texts):
    return {"id": "q7", "question": "Where is money kept?", "answerKey": "A",
            "choices": {"label": labels, "text": texts}}


def test_csqa_labels_and_texts_of_different_lengths_are_refused(tmp_path):
    record = _hub_record(list("ABCDE"), ["bank", "library", "store", "mall"])
    with pytest.raises(DataError, match=r"hub row 3: 5 choice labels but 4 choice texts"):
        get_task("csqa").normalise_record(record, "hub row 3")
    path = write_jsonl(str(tmp_path / "train.jsonl"), csqa_rows(2) + [record])
    with pytest.raises(DataError, match=r"train\.jsonl:3 \(id q7\): 5 choice labels but 4 choice texts"):
        get_task("csqa").load_raw(DataArguments(task="csqa", train_file=path))


def test_csqa_wrong_number_of_choices_is_refused_at_load(tmp_path):
    rows = csqa_rows(4)
    del rows[2]["question"]["choices"][4]
    path = write_jsonl(str(tmp_path / "dev.jsonl"), rows)
    with pytest.raises(DataError, match=r"dev\.jsonl:3 \(id q2\): 4 choices, but csqa has 5 per question"):
        get_task("csqa").load_raw(DataArguments(task="csqa", validation_file=path))


def test_csqa_duplicate_choice_labels_are_refused(tmp_path):
    record = _hub_record(list("ABCDD"), ["bank", "library", "store", "mall", "park"])
    with pytest.raises(DataError, match=r"row 0: duplicate choice label\(s\) \['D'\]"):
        get_task("csqa").normalise_record(record, "row 0")


def test_race_wrong_number_of_options_is_refused(tmp_path):
    root = write_race_dir(str(tmp_path / "RACE"))
    bad = os.path.join(root, "test", "high", "1.txt")
    with open(bad, encoding="utf-8") as handle:
        doc = json.load(handle)
    doc["options"][1] = doc["options"][1][:3]
    with open(bad, "w", encoding="utf-8") as handle:
        json.dump(doc, handle)
    with pytest.raises(DataError, match=r"1\.txt question 1: 3 choices, but race has 4 per question"):
        get_task("race").load_raw(DataArguments(task="race", data_dir=root))


def test_real_csqa_files_pass_validation():
    data = get_task("csqa").load_raw(DataArguments(task="csqa", data_dir=CSQA))
    assert (len(data["train"]), len(data["validation"])) == (9741, 1221)
    assert {len(c) for c in data["train"]["second"]} == {5}


def test_non_utf8_jsonl_names_file_and_offset(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl: not UTF-8 text \(byte 19, line 2\)"):
        get_task("csqa").load_raw(DataArguments(task="csqa", train_file=str(path)))
