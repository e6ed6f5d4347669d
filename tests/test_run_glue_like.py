"""End to end: `run_glue_like.main` on each task family with a tiny local model and data in the real format."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from datasets import Dataset, DatasetDict

import run_glue_like
from tests.task_fixtures import (
    TRANSLATION_PAIRS,
    csqa_rows,
    protein_sequences,
    tiny_esm_dir,
    tiny_mbart_dir,
    tiny_roberta_dir,
    winogrande_rows,
    write_fasta,
    write_jsonl,
    write_race_dir,
)

ARITHMETIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "arithmetic")
RESULT_KEYS = {"task", "metric_name", "metric", "metric_rule", "final_metric", "metrics", "final_step", "best_step",
               "sparsity", "sparsity_config", "model_name_or_path", "seed", "train_runtime"}


def run(tmp_path, task, model_dir, *extra, method="omp_before", sparsity="0.5", steps="2"):
    out = tmp_path / f"out-{task}"
    results = run_glue_like.main([
        "--task", task, "--model_name_or_path", model_dir, "--output_dir", str(out),
        "--sparsity_method", method, "--sparsity", sparsity, "--max_steps", steps,
        "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3",
        "--save_strategy", "no", "--logging_steps", "1", "--use_cpu", "True", *extra,
    ])
    with open(out / "all_results.json", encoding="utf-8") as handle:
        written = json.load(handle)
    assert set(written) == RESULT_KEYS
    assert written["task"] == task and written["metric"] == results["metric"]
    assert written["sparsity_config"]["method"] == method
    if method != "dense":
        assert written["sparsity"]["achieved"] == pytest.approx(float(sparsity), abs=0.01)
    return written


def test_csqa_official_jsonl(tmp_path):
    rows = csqa_rows(6)
    train = write_jsonl(str(tmp_path / "train.jsonl"), rows)
    dev = write_jsonl(str(tmp_path / "dev.jsonl"), rows[:4])
    model = tiny_roberta_dir(str(tmp_path / "roberta"), ["Q: Where is money kept? A: bank library store mall park"])
    result = run(tmp_path, "csqa", model, "--train_file", train, "--validation_file", dev)
    assert result["metric_name"] == "accuracy"
    assert result["metric"] in {0.0, 25.0, 50.0, 75.0, 100.0}  # 4 questions
    assert result["metrics"]["eval_accuracy"] == result["metric"]
    modules = result["sparsity"]["modules"]
    assert modules and all(name.startswith("roberta.encoder.") for name in modules)


def test_winogrande_hub_path_from_save_to_disk(tmp_path):
    hub_dir = str(tmp_path / "winogrande")
    rows = winogrande_rows(4)
    DatasetDict({"train": Dataset.from_list(rows), "validation": Dataset.from_list(rows[:2])}).save_to_disk(
        os.path.join(hub_dir, "winogrande_xl"))
    model = tiny_roberta_dir(str(tmp_path / "roberta"), [rows[0]["sentence"] + " cup bag"])
    result = run(tmp_path, "winogrande", model, "--dataset_name", hub_dir, "--sparsity_update_every", "1", method="gmp")
    assert result["metric"] in {0.0, 50.0, 100.0}


def test_race_release_layout_reports_levels_apart(tmp_path):
    root = write_race_dir(str(tmp_path / "RACE"))
    model = tiny_roberta_dir(str(tmp_path / "roberta"), ["Tom has a red ball and a blue kite. What colour green"])
    result = run(tmp_path, "race", model, "--data_dir", root, "--max_seq_length", "64")
    metrics = result["metrics"]
    assert {"eval_middle_accuracy", "eval_high_accuracy", "eval_accuracy"} <= set(metrics)
    pooled = (metrics["eval_middle_accuracy"] + metrics["eval_high_accuracy"]) / 2  # equal sizes
    assert result["metric"] == pytest.approx(pooled)


def test_mawps_real_fold_files(tmp_path, capsys):
    texts = []
    with open(os.path.join(ARITHMETIC, "cv_mawps", "fold0", "train.csv"), encoding="utf-8") as handle:
        texts = [next(handle) for _ in range(200)]
    model = tiny_roberta_dir(str(tmp_path / "enc"), texts, head="encoder")
    result = run(tmp_path, "mawps", model, "--data_dir", ARITHMETIC, "--fold", "0", "--max_train_samples", "16",
                 "--max_eval_samples", "8", steps="3")
    assert result["metric_name"] == "answer_accuracy"
    assert 0.0 <= result["metric"] <= 100.0 and result["metric"] * 8 / 100 == round(result["metric"] * 8 / 100)
    assert "eval_equation_accuracy" in result["metrics"]
    modules = result["sparsity"]["modules"]  # GTS, the default decoder: its matrices are pruned with the encoder's
    assert all(any(name.startswith(f"{part}.") for name in modules) for part in ("encoder", "predict", "generate",
                                                                                  "merge"))
    out = str(tmp_path / "out-mawps")
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3:] == run_glue_like.summary(result, out).splitlines()
    assert lines[-3].startswith(f"== mawps: answer_accuracy {result['metric']:.2f} (trained in ")
    assert lines[-2].startswith(f"   sparsity (omp_before): target 0.500, achieved {result['sparsity']['achieved']:.3f} (")
    assert lines[-1] == (f"   files in {out}: all_results.json, model.safetensors, sparsity_masks.safetensors, "
                         "config.json")


def test_summary_names_the_reporting_rule(tmp_path):
    (tmp_path / "all_results.json").write_text("{}")
    results = {"task": "csqa", "metric_name": "accuracy", "metric": 71.25, "metric_rule": "best", "best_step": 300,
               "final_metric": 70.0, "train_runtime": 12.34, "seed": 3, "sparsity_config": {"method": "gmp"},
               "sparsity": {"target": 0.9, "achieved": 0.9, "zeros": 900, "selected_numel": 1000}}
    assert run_glue_like.summary(results, str(tmp_path)).splitlines() == [
        "== csqa: accuracy 71.25 (best, at step 300; final 70.00, trained in 12.3 s, seed 3)",
        "   sparsity (gmp): target 0.900, achieved 0.900 (900 of 1,000 selected weights are zero)",
        f"   files in {tmp_path}: all_results.json",
    ]
    dense = {**results, "metric_rule": "final", "sparsity_config": {"method": "dense"},
             "sparsity": {"target": None, "achieved": 0.0, "zeros": 0, "selected_numel": 1000}}
    assert run_glue_like.summary(dense, str(tmp_path)).splitlines()[:2] == [
        "== csqa: accuracy 71.25 (trained in 12.3 s, seed 3)",
        "   sparsity (dense): target -, achieved 0.000 (0 of 1,000 selected weights are zero)",
    ]


def test_mawps_sequence_decoder_option(tmp_path):
    with open(os.path.join(ARITHMETIC, "cv_mawps", "fold0", "train.csv"), encoding="utf-8") as handle:
        texts = [next(handle) for _ in range(200)]
    model = tiny_roberta_dir(str(tmp_path / "enc"), texts, head="encoder")
    result = run(tmp_path, "mawps", model, "--data_dir", ARITHMETIC, "--max_train_samples", "8",
                 "--max_eval_samples", "4", "--decoder", "seq", steps="2")
    assert any(name.startswith("decoder.") for name in result["sparsity"]["modules"])


def test_protein_class_fasta_dir_records_split(tmp_path):
    data_dir = tmp_path / "thermo"
    data_dir.mkdir()
    for name, motif in [("psychrophilic", "AG"), ("mesophilic", "LV"), ("thermophilic", "KE"),
                        ("hyperthermophilic", "RW")]:
        write_fasta(str(data_dir / f"{name}.fasta"), protein_sequences(10, motif))
    model = tiny_esm_dir(str(tmp_path / "esm"), num_labels=4, pretrained=True)
    result = run(tmp_path, "thermoprot", model, "--data_dir", str(data_dir), "--max_seq_length", "64")
    assert result["metric"] in {0.0, 25.0, 50.0, 75.0, 100.0}  # 1 validation sequence per class
    with open(tmp_path / "out-thermoprot" / "data_splits.json", encoding="utf-8") as handle:
        split = json.load(handle)
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (32, 4, 4)


def test_protein_hub_path_from_save_to_disk(tmp_path):
    rows = [{"sequence": s, "label": i % 2} for i, s in enumerate(protein_sequences(6, "AGKE"))]
    hub_dir = str(tmp_path / "hps2c2")
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:4])}).save_to_disk(hub_dir)
    model = tiny_esm_dir(str(tmp_path / "esm"), num_labels=2, pretrained=True)
    result = run(tmp_path, "hp-s2c2", model, "--dataset_name", hub_dir, method="dense", sparsity="0.0")
    assert result["sparsity"]["achieved"] == 0.0 and result["metric"] in {0.0, 25.0, 50.0, 75.0, 100.0}


def test_translation_jsonl_and_hub_path(tmp_path):
    rows = [{"translation": {"en": en, "de": de}} for en, de in TRANSLATION_PAIRS]
    train = write_jsonl(str(tmp_path / "train.jsonl"), rows)
    model = tiny_mbart_dir(str(tmp_path / "mbart"), [t for pair in TRANSLATION_PAIRS for t in pair])
    common = ("--generation_num_beams", "2", "--generation_max_length", "8")
    result = run(tmp_path, "translation-2to2", model, "--train_file", train, "--validation_file", train, *common)
    metrics = result["metrics"]
    assert {"eval_en_XX-de_DE_bleu", "eval_de_DE-en_XX_bleu"} <= set(metrics)
    assert result["metric"] == pytest.approx((metrics["eval_en_XX-de_DE_bleu"] + metrics["eval_de_DE-en_XX_bleu"]) / 2)

    hub_dir = str(tmp_path / "opus")
    DatasetDict({"train": Dataset.from_list(rows), "validation": Dataset.from_list(rows[:2])}).save_to_disk(
        os.path.join(hub_dir, "de-en"))
    result = run(tmp_path, "translation-2to2", model, "--dataset_name", hub_dir, *common, method="gmp")
    assert 0.0 <= result["metric"] <= 100.0


def test_task_defaults_fill_only_missing_training_arguments(tmp_path):
    _, _, _, args = run_glue_like.parse_args(["--task", "csqa", "--output_dir", str(tmp_path), "--max_steps", "7"])
    assert args.max_steps == 7 and args.learning_rate == 1e-5 and args.warmup_steps == 150
    assert args.adam_beta2 == 0.98 and args.lr_scheduler_type == "polynomial"


@pytest.mark.parametrize("spelling", [["--per-device-train-batch-size", "3"], ["--per_device_train_batch_size", "3"],
                                      ["--per_device_train_batch_size=3"], ["--per-device-train-batch-size=3"]])
def test_user_options_win_over_task_defaults_in_any_spelling(tmp_path, spelling):
    _, _, _, args = run_glue_like.parse_args(["--task", "csqa", "--output_dir", str(tmp_path), *spelling])
    assert args.per_device_train_batch_size == 3
    assert args.max_steps == 3000 and args.learning_rate == 1e-5  # the task's other defaults still apply


def test_user_epochs_disable_the_task_step_count(tmp_path):
    _, _, _, args = run_glue_like.parse_args(["--task", "winogrande", "--output_dir", str(tmp_path),
                                              "--num-train-epochs", "1"])
    assert args.num_train_epochs == 1 and args.max_steps == -1
    assert args.warmup_steps == 2375 and args.per_device_train_batch_size == 32
    _, _, _, args = run_glue_like.parse_args(["--task", "winogrande", "--output_dir", str(tmp_path)])
    assert args.max_steps == 23750
    _, _, _, args = run_glue_like.parse_args(["--task", "winogrande", "--output_dir", str(tmp_path),
                                              "--num_train_epochs", "1", "--max_steps", "5"])
    assert args.max_steps == 5  # both given: the Trainer's own rule (max_steps wins)


def test_json_config_values_win_and_epochs_drop_the_step_count(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"task": "winogrande", "output_dir": str(tmp_path / "out"), "num_train_epochs": 1,
                                  "per_device_train_batch_size": 3}))
    model_args, data_args, _, args = run_glue_like.parse_args([str(config)])
    assert data_args.task == "winogrande"
    assert (args.num_train_epochs, args.max_steps, args.per_device_train_batch_size) == (1, -1, 3)
    assert args.learning_rate == 1e-5 and args.adam_beta2 == 0.98
    config.write_text(json.dumps({"output_dir": str(tmp_path / "out")}))
    with pytest.raises(ValueError, match=r"run\.json: no 'task' key"):
        run_glue_like.parse_args([str(config)])


def test_same_command_under_accelerate_launch(tmp_path):
    rows = csqa_rows(4)
    data = write_jsonl(str(tmp_path / "train.jsonl"), rows)
    model = tiny_roberta_dir(str(tmp_path / "roberta"), ["Q: Where is money kept? A: bank library store mall park"])
    out = tmp_path / "out"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", os.path.join(root, "run_glue_like.py"),
        "--task", "csqa", "--model_name_or_path", model, "--train_file", data, "--validation_file", data,
        "--output_dir", str(out), "--sparsity_method", "gmp", "--sparsity", "0.5", "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--save_strategy", "no", "--sparsity_update_every", "1",
    ], check=True, cwd=root, capture_output=True, timeout=300)
    with open(out / "all_results.json", encoding="utf-8") as handle:
        result = json.load(handle)
    assert result["sparsity"]["achieved"] == pytest.approx(0.5, abs=0.01) and result["metric"] in {0, 25, 50, 75, 100}


def test_resume_true_only_resumes_what_exists(tmp_path):
    assert run_glue_like.resume_target(None, str(tmp_path)) is None
    assert run_glue_like.resume_target("True", str(tmp_path / "missing")) is None
    assert run_glue_like.resume_target("True", str(tmp_path)) is None
    (tmp_path / "checkpoint-4").mkdir()
    assert run_glue_like.resume_target("True", str(tmp_path)) is True
    assert run_glue_like.resume_target("False", str(tmp_path)) is None
    assert run_glue_like.resume_target("/some/checkpoint-2", str(tmp_path)) == "/some/checkpoint-2"


def _logged(folder, key):
    """{step: value} of `key` in the run's trainer_state.json."""
    with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as handle:
        history = json.load(handle)["log_history"]
    return {e["step"]: e[key] for e in history if key in e}


def test_csqa_reports_the_best_epoch_beside_the_final_and_after_rounds_prune_the_best(tmp_path):
    from safetensors.torch import load_file

    rows = csqa_rows(4)
    data = write_jsonl(str(tmp_path / "train.jsonl"), rows)
    model = tiny_roberta_dir(str(tmp_path / "roberta"), ["Q: Where is money kept? A: bank library store mall park"])
    out = tmp_path / "out"
    result = run_glue_like.main([
        "--task", "csqa", "--model_name_or_path", model, "--train_file", data, "--validation_file", data,
        "--output_dir", str(out), "--sparsity_method", "omp_after", "--sparsity", "0.5", "--max_steps", "6",
        "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--use_cpu", "True", "--report_to", "none",
    ])
    logged = _logged(str(out), "eval_accuracy")
    assert sorted(logged) == [2, 4, 6]  # every epoch (2 steps) and the last step
    best_step = min(s for s, v in logged.items() if v == max(logged.values()))
    metrics = result["metrics"]
    assert result["metric_rule"] == "best" and (result["best_step"], result["final_step"]) == (best_step, 6)
    assert result["metric"] == metrics["best_eval_accuracy"] == logged[best_step]
    assert result["final_metric"] == metrics["eval_accuracy"] == logged[6]
    # Round 0 (dense) ended on its best checkpoint (the one save_total_limit keeps), which round 1 pruned.
    round0 = out / "round-0"
    (kept_dir,) = [d for d in os.listdir(round0) if d.startswith("checkpoint-")]
    with open(round0 / kept_dir / "trainer_state.json", encoding="utf-8") as handle:
        assert json.load(handle)["best_global_step"] == int(kept_dir.split("-")[1])
    saved = load_file(str(round0 / "model.safetensors"))
    kept = load_file(str(round0 / kept_dir / "model.safetensors"))
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in kept)


def test_race_selects_the_checkpoint_on_dev(tmp_path):
    root = write_race_dir(str(tmp_path / "RACE"))
    model = tiny_roberta_dir(str(tmp_path / "roberta"), ["Tom has a red ball and a blue kite. What colour green"])
    out = tmp_path / "out"
    result = run_glue_like.main([
        "--task", "race", "--model_name_or_path", model, "--data_dir", root, "--max_seq_length", "64",
        "--output_dir", str(out), "--sparsity_method", "dense", "--sparsity", "0.0", "--num_train_epochs", "2",
        "--gradient_accumulation_steps", "4", "--per_device_train_batch_size", "2", "--use_cpu", "True",
        "--report_to", "none",
    ])
    dev = _logged(str(out), "eval_dev_accuracy")
    assert sorted(dev) == [1, 2] and result["best_step"] == min(s for s, v in dev.items() if v == max(dev.values()))
    metrics = result["metrics"]
    assert {"best_eval_dev_accuracy", "best_eval_middle_accuracy", "best_eval_high_accuracy"} <= set(metrics)
    assert result["metric"] == pytest.approx((metrics["best_eval_middle_accuracy"] + metrics["best_eval_high_accuracy"]) / 2)
