"""Prune one-shot, then recover: `smc-prune` writes a sparse folder, `run_glue_like.py --sparsity_method fixed`
fine-tunes it on CSQA (the repository's data), and the trained model keeps exactly the pruned positions zero."""

import os

import pytest
import torch
from safetensors.torch import load_file

import run_glue_like
from smc_hf import MASKS_FILE
from smc_hf.cli.prune import main as smc_prune
from smc_hf.io.mask_file import read_masks
from tasks.tiny import tiny_roberta_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSQA = os.path.join(ROOT, "data", "commonsense", "csqa")


def _weights(folder):
    return {k: v for f in os.listdir(folder) if f.startswith("model") and f.endswith(".safetensors")
            for k, v in load_file(os.path.join(folder, f)).items()}


def _counterpart(name, names):
    """The name `name` has in another model of the same backbone: itself, or under a head's prefix."""
    (match,) = [n for n in names if n == name or n.endswith("." + name) or name.endswith("." + n)]
    return match


@pytest.mark.parametrize("head", ["multiple_choice", "encoder"])
@pytest.mark.parametrize("method", ["omp", "sparsegpt", "wanda"])
def test_pruned_folder_recovers_with_fixed_and_keeps_every_pruned_weight_zero(tmp_path, method, head):
    """`encoder`: a base checkpoint (parameter names without the head's `roberta.` prefix) trained under CSQA's
    multiple-choice head, as a Hub backbone is."""
    source = tiny_roberta_dir(str(tmp_path / "src"), ["Where would you find a revolving door? bank library mall"],
                              head=head)
    pruned = str(tmp_path / "pruned")
    argv = [source, "--method", method, "--sparsity", "0.5", "--output", pruned, "--progress", "false"]
    if method != "omp":
        argv += ["--calibration-task", "csqa", "--calibration-file", os.path.join(CSQA, "train_rand_split.jsonl"),
                 "--calibration-samples", "8", "--calibration-batch-size", "4"]
    assert smc_prune(argv) == 0
    masks = read_masks(os.path.join(pruned, MASKS_FILE))
    pruned_count = sum(int((~m).sum()) for m in masks.values())
    assert pruned_count == sum(round(0.5 * m.numel()) for m in masks.values())
    before = _weights(pruned)

    out = tmp_path / "recovered"
    result = run_glue_like.main([
        "--task", "csqa", "--model_name_or_path", pruned, "--data_dir", CSQA, "--max_train_samples", "8",
        "--max_eval_samples", "4", "--max_seq_length", "32", "--output_dir", str(out), "--sparsity_method", "fixed",
        "--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--save_strategy", "no",
        "--use_cpu", "True", "--report_to", "none",
    ])
    assert result["sparsity_config"]["method"] == "fixed"
    after = _weights(str(out))
    trained_masks = read_masks(os.path.join(out, MASKS_FILE))
    assert len(trained_masks) == len(masks)
    names = {name: _counterpart(name, list(trained_masks)) for name in masks}
    for name, mask in masks.items():
        assert torch.equal(trained_masks[names[name]], mask), name
        assert int((after[names[name]][~mask] != 0).sum()) == 0, name
    # no kept weight trained to exactly 0, and the kept weights did train
    assert sum(int((after[names[n]] == 0).sum()) for n in masks) == pruned_count
    assert any(not torch.equal(after[names[n]], before[n]) for n in masks)
