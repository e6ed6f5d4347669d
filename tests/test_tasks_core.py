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
