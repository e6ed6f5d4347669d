"""Task registry, offline metrics, prefix-expression evaluation and the two-rate optimizer."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from tasks import TASKS, get_task
from tasks.base import TwoRateAdamW
from tasks.metrics import accuracy, answer_accuracy, bleu
from tasks.prefix_expr import evaluate_prefix, is_complete_prefix


def test_registry_has_the_benchmark_datasets():
    assert set(TASKS) == {
        "csqa", "winogrande", "race", "mawps", "asdiv-a", "svamp", "hp-s", "hp-s2c5", "hp-s2c2", "meltome",
        "thermoprot", "translation-2to2", "translation-5to5", "translation-10to10",
    }
    assert get_task("csqa").auto_model == "AutoModelForMultipleChoice"
    assert get_task("hp-s").default_model == "facebook/esm1b_t33_650M_UR50S"
    assert get_task("translation-10to10").seq2seq


def test_unknown_task_lists_known_names():
    with pytest.raises(KeyError, match="unknown task 'cqsa'.*csqa.*mawps"):
        get_task("cqsa")


def test_accuracy_in_percent():
    assert accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 50.0
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])


@pytest.mark.parametrize("tokens, numbers, value", [
    (["+", "number0", "*", "number1", "2.0"], [3, 4], 11.0),
    (["-", "number1", "number0"], [1, 5], 4.0),
    (["/", "*", "number0", "number1", "100.0"], [50, 3], 1.5),
    (["^", "number0", "2"], [3], 9.0),
    (["/", "number0", "0"], [3], None),
    (["+", "number0"], [3], None),
    (["number2"], [3, 4], None),
    (["+", "number0", "number1", "number0"], [3, 4], None),
])
def test_evaluate_prefix(tokens, numbers, value):
    assert evaluate_prefix(tokens, numbers) == value


def test_is_complete_prefix():
    assert is_complete_prefix(["*", "number0", "-", "number1", "1.0"])
    assert not is_complete_prefix(["*", "number0"])
    assert not is_complete_prefix(["number0", "number1"])


def test_answer_accuracy_scores_values_not_strings():
    exprs = [["+", "number1", "number0"], ["-", "number0", "number1"], ["/", "number0", "0"]]
    assert answer_accuracy(exprs, [[1, 2], [5, 3], [1]], [3.0, 3.0, 1.0]) == pytest.approx(100 / 3)


def test_bleu():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["w x y z"]) == 0.0


def test_two_rate_adamw_groups(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-5, weight_decay=0.1)
    optimizer = TwoRateAdamW()(model, head_prefixes=("1.",), head_lr=1e-3, args=args)
    groups = {(g["lr"], g["weight_decay"]): len(g["params"]) for g in optimizer.param_groups}
    assert groups == {(1e-5, 0.1): 1, (1e-5, 0.0): 1, (1e-3, 0.1): 1, (1e-3, 0.0): 1}


UPPER_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "?", "Q", "A", "WHERE", "IS", "MONEY", "KEPT",
               "BANK", "LIBRARY", "STORE", "MALL", "PARK"]


def _lowercasing_bert_dir(path):
    """A BERT multiple-choice checkpoint whose tokenizer lower-cases (the default) against an upper-case vocab."""
    import os

    from transformers import BertConfig, BertForMultipleChoice

    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(UPPER_VOCAB) + "\n")
    config = BertConfig(vocab_size=len(UPPER_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMultipleChoice(config).save_pretrained(path)
    return path


def test_unknown_token_guard_names_tokenizer_and_example(tmp_path):
    from transformers import AutoTokenizer

    from tasks import DataArguments, DataError
    from tests.task_fixtures import csqa_rows, roberta_tokenizer, write_jsonl

    task = get_task("csqa")
    path = _lowercasing_bert_dir(str(tmp_path / "bert"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    raw = task.load_raw(DataArguments(task="csqa", train_file=write_jsonl(str(tmp_path / "t.jsonl"), csqa_rows(4))))
    encoded = task.preprocess(raw, tokenizer, DataArguments(task="csqa"), model=None)["train"]
    with pytest.raises(DataError, match=r"csqa: 7[0-9]% of the input tokens .* 4 training examples are unknown "
                                        r"\(\[UNK\]\) to the tokenizer BertTokenizer\(.*bert'?\).*do_lower_case.*"
                                        r"example 0: \['\[CLS\]', '\[UNK\]', ':', '\[UNK\]'"):
        task.check_inputs(encoded, tokenizer)
    bpe = roberta_tokenizer(["Q: Where is money kept? A: bank library store mall park"], str(tmp_path / "bpe"))
    assert task.check_inputs(task.preprocess(raw, bpe, DataArguments(task="csqa"), model=None)["train"], bpe) == 0.0


def test_run_refuses_to_train_on_unknown_tokens(tmp_path):
    import run_glue_like
    from tasks import DataError
    from tests.task_fixtures import csqa_rows, write_jsonl

    train = write_jsonl(str(tmp_path / "train.jsonl"), csqa_rows(4))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="csqa: .* of the input tokens"):
        run_glue_like.main(["--task", "csqa", "--model_name_or_path", _lowercasing_bert_dir(str(tmp_path / "bert")),
                            "--train_file", train, "--validation_file", train, "--output_dir", str(out),
                            "--max_steps", "1", "--save_strategy", "no", "--use_cpu", "True"])
    assert not (out / "all_results.json").exists()
