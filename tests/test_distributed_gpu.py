"""The shipped Accelerate configs on GPUs: DDP (bf16, fp16), FSDP2, FSDP1, DeepSpeed ZeRO-2/3.

Each run is `run_glue_like.py` (through tests/distributed_driver.py) under `accelerate launch --config_file
scripts/accelerate/<config> --num_processes N`, N = min(2, GPUs). Skipped without CUDA; the DeepSpeed cases
also without the `deepspeed` package.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed_launch import accelerate_launch, check, read_ranks, tiny_csqa

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
pytestmark = pytest.mark.skipif(GPUS == 0, reason="needs CUDA GPUs")
needs_deepspeed = pytest.mark.skipif(not HAS_DEEPSPEED, reason="deepspeed is not installed")

CASES = [
    pytest.param("ddp_8gpu.yaml", "gmp", "--bf16", None, id="ddp-bf16"),
    pytest.param("ddp_8gpu.yaml", "gmp", "--fp16", None, id="ddp-fp16"),
    pytest.param("ddp_8gpu.yaml", "rigl", "--bf16", None, id="ddp-rigl"),
    pytest.param("fsdp2_8gpu.yaml", "gmp", "--bf16", "dtensor", id="fsdp2"),
    pytest.param("fsdp2_8gpu.yaml", "rigl", "--bf16", "dtensor", id="fsdp2-rigl"),
    pytest.param("fsdp1_8gpu.yaml", "gmp", "--bf16", "fsdp1", id="fsdp1"),
    pytest.param("deepspeed_zero2_8gpu.yaml", "gmp", "--bf16", "deepspeed-zero1/2", id="zero2",
                 marks=needs_deepspeed),
    pytest.param("deepspeed_zero3_8gpu.yaml", "gmp", "--bf16", "deepspeed-zero3", id="zero3", marks=needs_deepspeed),
]


@pytest.mark.parametrize("config, method, precision, placement", CASES)
def test_masks_stay_exact_under_each_backend(tmp_path, config, method, precision, placement):
    data, model_dir = tiny_csqa(tmp_path)
    out = tmp_path / "out"
    processes = min(2, GPUS)
    extra = ["--update_every", "2"] + (["--end_step", "5"] if method == "rigl" else [])
    result = accelerate_launch("distributed_driver.py", [
        "--task", "csqa", "--model_name_or_path", model_dir, "--train_file", data, "--validation_file", data,
        "--output_dir", str(out), "--sparsity_method", method, "--sparsity", "0.5", "--max_steps", "6",
        "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--warmup_steps", "0",
        "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "True", precision, "True",
        "--average_tokens_across_devices", "False", *extra,
    ], processes=processes, config=config, timeout=600)
    check(result)
    ranks = read_ranks(out)
    assert len(ranks) == processes and len({r["digest"] for r in ranks}) == 1
    for record in ranks:
        assert record["placement"] == placement
        assert record["pruned"] == record["numel"] // 2
        assert record["pruned_nonzero_weights"] == 0
        assert record["pruned_nonzero_optimizer_entries"] in (0, None)
    weights = load_file(str(out / "model.safetensors"))
    masks = load_file(str(out / "sparsity_masks.safetensors"))
    assert sum(int(weights[n][~m].ne(0).sum()) for n, m in masks.items()) == 0
    assert sum(int((~m).sum()) for m in masks.values()) == sum(m.numel() for m in masks.values()) // 2
