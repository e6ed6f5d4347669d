"""Two-process DDP on the CPU (gloo) end to end through `run_glue_like.py` under `accelerate launch`.

GMP changes the mask six times during the run, so agreement is tested where it can break. The tiny model has
no dropout and the loss is not rescaled by the number of processes (`--average_tokens_across_devices False`),
so one process with the same global batch is numerically the same computation.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed_launch import accelerate_launch, check, read_ranks, tiny_csqa

STEPS = 6
SPARSITY = 0.5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return (root, *tiny_csqa(root))


def launch(inputs, name, processes, *extra, **env):
    root, data, model_dir = inputs
    out = root / name
    global_batch = 4
    args = [
        "--task", "csqa", "--model_name_or_path", model_dir, "--train_file", data, "--validation_file", data,
        "--output_dir", str(out), "--sparsity_method", "gmp", "--sparsity", str(SPARSITY),
        "--max_steps", str(STEPS), "--sparsity_update_every", "1", "--per_device_train_batch_size", str(global_batch // processes),
        "--learning_rate", "1e-3", "--warmup_steps", "0", "--max_grad_norm", "0", "--disable_tqdm", "True",
        "--use_cpu", "True", "--average_tokens_across_devices", "False", "--report_to", "none", *extra,
    ]
    return out, accelerate_launch("distributed_driver.py", args, processes=processes, **env)


@pytest.fixture(scope="module")
def ddp(inputs):
    out, result = launch(inputs, "ddp", 2, "--save_strategy", "no")
    check(result)
    return out


def test_every_rank_holds_the_same_masks_and_exact_zeros(ddp):
    records = read_ranks(ddp)
    assert [r["process_index"] for r in records] == [0, 1]
    assert all(r["num_processes"] == 2 for r in records)
    assert records[0]["digest"] == records[1]["digest"]
    for record in records:
        assert record["steps"] == STEPS
        assert record["pruned"] == round(SPARSITY * record["numel"])
        assert record["pruned_nonzero_weights"] == 0
        assert record["pruned_nonzero_optimizer_entries"] == 0


def test_saved_model_is_exactly_sparse_at_the_target(ddp):
    weights = load_file(str(ddp / "model.safetensors"))
    masks = load_file(str(ddp / "sparsity_masks.safetensors"))
    assert masks and all(m.dtype == torch.bool for m in masks.values())
    assert sum(int((weights[n][~m] != 0).sum()) for n, m in masks.items()) == 0
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned == round(SPARSITY * sum(m.numel() for m in masks.values()))
    with open(ddp / "all_results.json") as handle:
        assert json.load(handle)["sparsity"]["achieved"] == SPARSITY


def test_matches_one_process_with_the_same_global_batch(inputs, ddp):
    single, result = launch(inputs, "single", 1, "--save_strategy", "no")
    check(result)
    assert read_ranks(single)[0]["num_processes"] == 1
    assert read_ranks(single)[0]["digest"] == read_ranks(ddp)[0]["digest"]
    a, b = load_file(str(ddp / "model.safetensors")), load_file(str(single / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-3)


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(inputs, ddp):
    out, killed = launch(inputs, "killed", 2, "--save_strategy", "steps", "--save_steps", "2",
                         SMC_TEST_KILL_AT_STEP="4")
    assert killed.returncode != 0
    assert sorted(os.listdir(out)) == ["checkpoint-2", "checkpoint-4"]
    assert os.path.isfile(out / "checkpoint-4" / "sparsity_masks.safetensors")
    _, resumed = launch(inputs, "killed", 2, "--save_strategy", "steps", "--save_steps", "2",
                        "--resume_from_checkpoint", "True")
    check(resumed)
    records = read_ranks(out)
    assert records[0]["digest"] == records[1]["digest"] == read_ranks(ddp)[0]["digest"]
    assert all(r["steps"] == STEPS and r["pruned_nonzero_weights"] == 0 for r in records)
    a, b = load_file(str(ddp / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)
