"""Arithmetic: the real SVAMP-release CSVs, data errors, the solver's constrained decoding, the collator."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tasks import DataArguments, DataError, get_task
from tasks.arithmetic import (
    ArithmeticCollator, cross_validation_score, gold_value, output_constants, read_problems,
)
from tasks.metrics import pool_folds
from tasks.arithmetic_model import ArithmeticSolver, ArithmeticSolverConfig
from tasks.prefix_expr import OPERATORS, is_complete_prefix
from transformers import RobertaConfig

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "arithmetic")


def test_real_mawps_fold0():
    train = read_problems(os.path.join(DATA, "cv_mawps", "fold0", "train.csv"))
    dev = read_problems(os.path.join(DATA, "cv_mawps", "fold0", "dev.csv"))
    assert (len(train), len(dev)) == (1537, 384)
    assert dev[0]["equation"] == ["*", "number0", "number1"] and dev[0]["numbers"] == [56.0, 9.0]
    assert output_constants([r["equation"] for r in train]) == ["0.01", "1.0", "12.0", "100.0", "3.0", "4.0", "0.5",
                                                                "7.0"]
    # Answer is rounded in 3 dev rows: the score compares with the gold expression's value.
    assert gold_value(["/", "number0", "number1"], [40.0, 7.0], 5.0) == pytest.approx(40 / 7)


def test_task_resolves_folds_and_the_svamp_setting():
    mawps = get_task("mawps").load_raw(DataArguments(task="mawps", data_dir=DATA, fold=3))
    assert (len(mawps["train"]), len(mawps["validation"])) == (1537, 384)
    asdiv = get_task("asdiv-a").load_raw(DataArguments(task="asdiv-a", data_dir=DATA, fold=4))
    assert (len(asdiv["train"]), len(asdiv["validation"])) == (951, 266)
    svamp = get_task("svamp").load_raw(DataArguments(task="svamp", data_dir=DATA))
    assert (len(svamp["train"]), len(svamp["validation"])) == (3138, 1000)


def _csv(path, header, rows):
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return str(path)


def test_missing_column_names_file_and_column(tmp_path):
    path = _csv(tmp_path / "train.csv", "Question,Numbers,Answer", ['"a number0 b",3,3'])
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) \['Equation'\]"):
        read_problems(path)


def test_bad_placeholder_and_empty_split(tmp_path):
    path = _csv(tmp_path / "dev.csv", "Question,Numbers,Equation,Answer",
                ['"a number0 b",3,+ number0 number0,6', '"c number0",3,* number0 number1,9'])
    with pytest.raises(DataError, match=r"dev\.csv:3: column 'Equation' uses number1 but 'Numbers' has 1"):
        read_problems(path)
    with pytest.raises(DataError, match=r"empty\.csv: no examples \(empty split\)"):
        read_problems(_csv(tmp_path / "empty.csv", "Question,Numbers,Equation,Answer", []))


def test_greedy_decoding_emits_complete_expressions_over_present_numbers():
    torch.manual_seed(0)
    encoder = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=40)
    config = ArithmeticSolverConfig(encoder_config=encoder.to_dict(), fixed_tokens=list(OPERATORS[:4]) + ["1.0"],
                                    max_num_slots=4, decoder_hidden=16, max_output_length=7)
    model = ArithmeticSolver(config).eval()
    positions = torch.tensor([[3, 5, -1, -1], [2, -1, -1, -1], [1, 2, 4, 6]])
    out = model(input_ids=torch.randint(3, 50, (3, 10)), attention_mask=torch.ones(3, 10, dtype=torch.long),
                number_positions=positions).predictions
    vocab = config.output_vocab
    for row, pos in zip(out.tolist(), positions.tolist()):
        tokens = [vocab[i] for i in row if i >= 0]
        assert is_complete_prefix(tokens) and len(tokens) <= 7
        used = {int(t[6:]) for t in tokens if t.startswith("number")}
        assert all(pos[k] >= 0 for k in used)


def test_collator_pads_to_fixed_slots():
    batch = ArithmeticCollator(pad_token_id=1, num_slots=3)([
        {"input_ids": [0, 5, 2], "attention_mask": [1, 1, 1], "number_positions": [1], "labels": [0, 4, 5]},
        {"input_ids": [0, 2], "attention_mask": [1, 1], "number_positions": [1, 1], "labels": [4]},
    ])
    assert batch["input_ids"].tolist() == [[0, 5, 2], [0, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["number_positions"].tolist() == [[1, -1, -1], [1, 1, -1]]
    assert batch["labels"].tolist() == [[0, 4, 5], [4, -100, -100]]


def test_data_dir_may_be_a_fold_folder_or_absent(tmp_path):
    fold = os.path.join(DATA, "cv_asdiv-a", "fold1")
    direct = get_task("asdiv-a").load_raw(DataArguments(task="asdiv-a", data_dir=fold))
    assert (len(direct["train"]), len(direct["validation"])) == (979, 238)
    default = get_task("mawps").load_raw(DataArguments(task="mawps", fold=2, max_eval_samples=5))
    assert (len(default["train"]), len(default["validation"])) == (1537, 5)
    with pytest.raises(DataError, match="no train.csv for svamp"):
        get_task("svamp").load_raw(DataArguments(task="svamp", data_dir=str(tmp_path)))


def test_pooled_cross_validation_score(tmp_path):
    # Folds of 238 and 266 problems: pooled (200 + 133) / 504 = 66.07, the mean of 84.03 and 50.0 would be 67.02.
    files = []
    for fold, (correct, total) in enumerate([(200, 238), (133, 266)]):
        path = tmp_path / f"fold{fold}.json"
        path.write_text(json.dumps({"metric_rule": "best", "metrics": {
            "best_eval_answer_correct": correct, "best_eval_examples": total,
            "eval_answer_correct": 0, "eval_examples": total}}))
        files.append(str(path))
    assert cross_validation_score(files) == pytest.approx(100 * 333 / 504)
    assert pool_folds([(200, 238), (133, 266)]) == pytest.approx(66.071, abs=1e-3)
    with pytest.raises(ValueError, match="0 <= correct <= evaluated"):
        pool_folds([(5, 4)])


def test_paper_dropout_and_gts_selection(tmp_path):
    from tasks import ModelArguments
    from tests.task_fixtures import tiny_roberta_dir

    task = get_task("mawps")
    raw = task.load_raw(DataArguments(task="mawps", data_dir=DATA, max_train_samples=40, max_eval_samples=4))
    model_dir = tiny_roberta_dir(str(tmp_path / "enc"), ["number0 plus number1"], head="encoder")
    model = task.load_model(ModelArguments(model_name_or_path=model_dir, decoder="seq"), None, raw)
    assert model.config.decoder_dropout == 0.5 and model.decoder.layers[0].dropout.p == 0.5
    from smc_hf.core.selection import select_parameters

    targets, ignore = task.sparsity_selection(ModelArguments())
    names = set(select_parameters(model, targets=targets, ignore=ignore))
    assert "encoder.embeddings.word_embeddings.weight" in names and "token_embed.weight" in names
    assert "decoder.layers.0.self_attn.in_proj_weight" in names and "fixed_out.weight" in names
    assert not any(n.endswith(".bias") or "norm" in n.lower() for n in names)
    targets, ignore = task.sparsity_selection(ModelArguments(prune_embeddings=False))
    dense_embeddings = set(select_parameters(model, targets=targets, ignore=ignore))
    assert names - dense_embeddings == {n for n in names if "embed" in n} != set()


REPO_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "arithmetic")
HEADER = "Question,Numbers,Equation,Answer"


@pytest.mark.parametrize("equation, problem", [
    ("number0 + number1", r"not a prefix expression: 'number0 \+ number1' \(a complete expression ends at token 1"),
    ("+ number0", r"incomplete prefix expression: '\+ number0' \(1 operand\(s\) missing"),
    ("% number0 number1", r"unknown token '%' in '% number0 number1'"),
    ("+ number0 nan", r"unknown token 'nan' in '\+ number0 nan'"),
    ("+ number0 number1 number0", r"not a prefix expression: .*ends at token 3 of 4"),
])
def test_malformed_equations_are_refused_with_file_row_and_equation(tmp_path, equation, problem):
    path = _csv(tmp_path / "train.csv", HEADER, ['"a number0 b number1",3 4,+ number0 number1,7',
                                                 f'"c number0 d number1",3 4,{equation},7'])
    with pytest.raises(DataError, match=rf"train\.csv:3: column 'Equation': {problem}"):
        read_problems(path)


def test_every_real_arithmetic_csv_is_well_formed():
    import glob

    files = sorted(glob.glob(os.path.join(REPO_DATA, "**", "*.csv"), recursive=True))
    rows = {os.path.relpath(f, REPO_DATA): len(read_problems(f)) for f in files}
    assert len(files) == 22 and sum(rows.values()) == 19828
    assert rows["mawps-asdiv-a_svamp/train.csv"] == 3138


def test_dropped_training_problems_are_counted_and_named(tmp_path, caplog):
    import logging
    from types import SimpleNamespace

    from tests.task_fixtures import roberta_tokenizer

    rows = [f'"q{i} number0 and number1",3 4,+ number0 number1,7' for i in range(5)]
    rows[3] = '"q3 number0 and number1",3 4,+ number0 * number1 33.0,135'
    train = _csv(tmp_path / "train.csv", HEADER, rows)
    task = get_task("mawps")
    raw = task.load_raw(DataArguments(task="mawps", train_file=train))
    tokenizer = roberta_tokenizer([f"q{i} number0 and number1" for i in range(5)], str(tmp_path / "tok"))
    model = SimpleNamespace(config=SimpleNamespace(output_vocab=["+", "-", "*", "/", "number0", "number1"],
                                                   max_num_slots=2, max_output_length=8))
    with caplog.at_level(logging.WARNING, logger="tasks.arithmetic"):
        encoded = task.preprocess(raw, tokenizer, DataArguments(task="mawps"), model)
    assert len(encoded["train"]) == 4
    assert "mawps: 1 of 5 training problems dropped" in caplog.text and "train.csv:5" in caplog.text


def test_non_utf8_csv_names_file_and_offset(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_bytes(HEADER.encode() + b'\n"caf\xe9 number0",3,number0,3\n')
    with pytest.raises(DataError, match=r"dev\.csv: not UTF-8 text \(byte 37, line 2\)"):
        read_problems(str(path))
