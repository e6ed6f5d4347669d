"""scripts/arithmetic_dense_report.py: learning curves and per-fold figures from run folders, a finished fold and
one in progress (read from its newest checkpoint), wall time summed over killed and resumed attempts."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys

from tests.test_bench import ROOT

spec = importlib.util.spec_from_file_location("arithmetic_dense_report",
                                              os.path.join(ROOT, "scripts", "arithmetic_dense_report.py"))
report = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = report  # dataclasses look their module up by name
spec.loader.exec_module(report)


def _state(epochs, accuracies, examples=384, planned=50):
    history = []
    for epoch, accuracy in zip(epochs, accuracies):
        history += [{"epoch": epoch - 0.5, "loss": 1.0 / epoch, "step": 100 * epoch - 50},
                    {"epoch": epoch - 0.01, "loss": 0.5 / epoch, "step": 100 * epoch - 1},
                    {"epoch": float(epoch), "step": 100 * epoch, "eval_answer_accuracy": accuracy,
                     "eval_answer_correct": round(accuracy * examples / 100), "eval_examples": examples,
                     "eval_equation_accuracy": accuracy - 2, "eval_loss": 0.9 / epoch}]
    return {"log_history": history, "global_step": 100 * epochs[-1], "num_train_epochs": planned}


def test_a_finished_fold_and_one_in_progress(tmp_path):
    done = tmp_path / "runs/mawps/fold-0"
    done.mkdir(parents=True)
    (done / "trainer_state.json").write_text(json.dumps(_state([1, 2, 3], [40.0, 62.5, 60.0], planned=3)))
    (done / "all_results.json").write_text("{}")
    (done / "attempts.tsv").write_text("1000 1600\n2000 2300\n")  # killed once, resumed, finished: 900 s
    running = tmp_path / "runs/mawps/fold-1"
    (running / "checkpoint-200").mkdir(parents=True)
    (running / "checkpoint-100").mkdir()
    (running / "checkpoint-100/trainer_state.json").write_text(json.dumps(_state([1], [10.0])))
    state = running / "checkpoint-200/trainer_state.json"
    state.write_text(json.dumps(_state([1, 2], [30.0, 50.0])))
    (running / "attempt_start").write_text("5000")
    (running / "heartbeat").write_text("5500")
    os.utime(state, (5400, 5400))  # the checkpoint was saved 100 s before the last heartbeat

    out = tmp_path / "out"
    assert report.main(str(tmp_path / "runs"), str(out)) == 0
    runs = {r.fold: r for r in report.collect(str(tmp_path / "runs"))}
    assert runs[0].finished and runs[0].wall_s == 900 and runs[0].best["epoch"] == 2 and runs[0].last["epoch"] == 3
    assert not runs[1].finished and runs[1].global_step == 200  # the newest checkpoint, not checkpoint-100
    assert runs[1].wall_s == 500 and runs[1].wall_to_state_s == 400
    summary = (out / "summary.md").read_text()
    assert "| 0 | 3 / 3 | 62.50 (2) | 60.00 | 0.25 | 0.33 | finished |" in summary
    assert "| 1 | 2 / 50 | 50.00 (2) | 50.00 | 0.14 | 0.50 | in progress |" in summary
    assert "Folds finished: 1 of 5; no 5-fold figure yet." in summary
    with open(out / "curves.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["fold"], r["epoch"], r["answer_accuracy"]) for r in rows] == [
        ("0", "1.0", "40.0"), ("0", "2.0", "62.5"), ("0", "3.0", "60.0"), ("1", "1.0", "30.0"), ("1", "2.0", "50.0")]
    assert float(rows[1]["train_loss"]) == (1.0 / 2 + 0.5 / 2) / 2  # the mean of the epoch's logged losses
    assert (out / "curves.png").stat().st_size > 0


def test_five_finished_folds_are_pooled_by_counts(tmp_path):
    for fold, (accuracy, examples) in enumerate([(50.0, 100), (100.0, 300), (0.0, 100), (50.0, 100), (50.0, 400)]):
        run = tmp_path / f"runs/asdiv-a/fold-{fold}"
        run.mkdir(parents=True)
        (run / "trainer_state.json").write_text(json.dumps(_state([1], [accuracy], examples=examples, planned=1)))
        (run / "all_results.json").write_text("{}")
    assert report.main(str(tmp_path / "runs"), str(tmp_path / "out")) == 0
    # (50 + 300 + 0 + 50 + 200) / 1000, not the mean of the fold accuracies (50)
    assert "Pooled over the 5 folds (correct / examples): best 60.00, last 60.00." in (
        tmp_path / "out/summary.md").read_text()


def test_no_run_yet_is_an_error_that_says_what_writes_them(tmp_path, capsys):
    assert report.main(str(tmp_path / "nothing"), str(tmp_path / "out")) == 1
    assert "scripts/arithmetic_dense.sh writes them" in capsys.readouterr().err
