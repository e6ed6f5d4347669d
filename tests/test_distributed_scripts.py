"""The launch scripts and Accelerate/DeepSpeed configs in scripts/: they parse, and build the intended commands.

`PYTHON=echo` makes a script print the command it would run instead of running it.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from tests.distributed_launch import ROOT, environment

SCRIPTS = os.path.join(ROOT, "scripts")
EXPECTED = {
    "single_gpu.yaml": ("NO", 1),
    "ddp_8gpu.yaml": ("MULTI_GPU", 8),
    "fsdp1_8gpu.yaml": ("FSDP", 8),
    "fsdp2_8gpu.yaml": ("FSDP", 8),
    "deepspeed_zero2_8gpu.yaml": ("DEEPSPEED", 8),
    "deepspeed_zero3_8gpu.yaml": ("DEEPSPEED", 8),
    "multinode_2x8gpu.yaml": ("MULTI_GPU", 16),
}


def script(name, *args, **env):
    return subprocess.run(["bash", os.path.join(SCRIPTS, name), *args], cwd=ROOT, capture_output=True, text=True,
                          env=environment(**env), timeout=120)


def test_every_accelerate_config_loads_with_the_intended_backend():
    found = {os.path.basename(p) for p in glob.glob(os.path.join(SCRIPTS, "accelerate", "*.yaml"))}
    assert found == set(EXPECTED)
    for name, (backend, processes) in EXPECTED.items():
        config = load_config_from_file(os.path.join(SCRIPTS, "accelerate", name))
        assert config.distributed_type.value == backend and config.num_processes == processes, name
        if backend == "FSDP":
            version = config.fsdp_config["fsdp_version"]
            assert f"fsdp{version}" in name
            assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # save_model writes whole weights
            if version == 1:
                assert config.fsdp_config["fsdp_use_orig_params"] is True  # masks need the original parameters
        if backend == "DEEPSPEED":
            path = os.path.join(ROOT, config.deepspeed_config["deepspeed_config_file"])
            with open(path) as handle:
                stage = json.load(handle)["zero_optimization"]["stage"]
            assert f"zero{stage}" in name


@pytest.mark.parametrize("name, config, task", [
    ("run_single_gpu.sh", "single_gpu.yaml", "csqa"),
    ("run_ddp_8gpu.sh", "ddp_8gpu.yaml", "winogrande"),
    ("run_fsdp_8gpu.sh", "fsdp2_8gpu.yaml", "translation-2to2"),
    ("run_deepspeed_zero2.sh", "deepspeed_zero2_8gpu.yaml", "race"),
    ("run_deepspeed_zero3.sh", "deepspeed_zero3_8gpu.yaml", "translation-5to5"),
])
def test_launch_scripts_run_the_entry_script_on_a_named_task(name, config, task):
    result = script(name, "--max_steps", "10", PYTHON="echo", METHOD="omp_after", SPARSITY="0.7", SEED="3")
    assert result.returncode == 0, result.stderr
    line = result.stdout.split()
    assert line[:3] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert line[3] == os.path.join(SCRIPTS, "accelerate", config)
    entry = line.index("run_glue_like.py")
    args = line[entry + 1:]
    pairs = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert pairs["--task"] == task and pairs["--sparsity_method"] == "omp_after" and pairs["--sparsity"] == "0.7"
    assert pairs["--output_dir"] == os.path.join(ROOT, "runs", f"{task}-omp_after-0.7-seed3")
    assert pairs["--resume_from_checkpoint"] == "True"
    assert args[-2:] == ["--max_steps", "10"]  # the caller's arguments come last, so they win


def test_fsdp1_is_chosen_by_environment():
    result = script("run_fsdp_8gpu.sh", PYTHON="echo", FSDP_VERSION="1")
    assert os.path.join("accelerate", "fsdp1_8gpu.yaml") in result.stdout


def test_multinode_needs_the_main_address_and_the_machine_rank():
    env = {k: "" for k in ("MASTER_ADDR", "NODE_RANK", "SLURM_NODEID", "SLURM_JOB_NODELIST")}
    missing = script("run_multinode.sh", PYTHON="echo", **env)
    assert missing.returncode == 2 and "MASTER_ADDR" in missing.stderr
    env.update(MASTER_ADDR="node01", NODE_RANK="1")
    line = script("run_multinode.sh", PYTHON="echo", **env).stdout.split()
    entry = line.index("run_glue_like.py")
    launch = line[:entry]
    assert launch[launch.index("--machine_rank") + 1] == "1"
    assert launch[launch.index("--main_process_ip") + 1] == "node01"
    assert "--machine_rank" not in line[entry:]


def test_sweep_plans_one_line_per_cell_and_runs_the_one_it_is_given(tmp_path):
    env = dict(SWEEP_DIR=str(tmp_path), TASKS="csqa", METHODS="omp_before,gmp", SPARSITIES="0.5,0.7", SEEDS="1",
               PYTHON=sys.executable, EXTRA="--max_steps 5")
    plan = script("sweep_job_array.sh", "plan", **env)
    assert plan.returncode == 0, plan.stderr
    with open(tmp_path / "cells.txt") as handle:
        cells = [line for line in handle.read().splitlines() if line]
    assert len(cells) == 5 and not any(line.startswith("#") for line in cells)  # dense + 2 methods x 2 sparsities
    assert "--array=1-5%16" in plan.stdout and "dependency" not in plan.stdout  # before-training: one stage
    env["PYTHON"] = "echo"
    third = script("sweep_job_array.sh", "3", **env)
    assert third.returncode == 0, third.stderr
    command = third.stdout.splitlines()[-1]
    assert command.startswith("-m smc_hf.cli.bench run --tasks csqa --methods ") and command.endswith("--max_steps 5")
    assert script("sweep_job_array.sh", "6", **env).returncode == 2
    assert script("sweep_job_array.sh", SLURM_ARRAY_TASK_ID="2", **env).returncode == 0


def test_sweep_plan_submits_after_training_cells_after_their_dense_run(tmp_path):
    env = dict(SWEEP_DIR=str(tmp_path), TASKS="csqa", METHODS="omp_after", SPARSITIES="0.5,0.7", SEEDS="1",
               PYTHON=sys.executable, EXTRA="--max_steps 5")
    plan = script("sweep_job_array.sh", "plan", **env)
    assert plan.returncode == 0, plan.stderr
    with open(tmp_path / "cells.txt") as handle:
        cells = [line for line in handle.read().splitlines() if line]
    assert len(cells) == 3 and "--methods dense" in cells[0]  # the shared dense run, then 2 cells that start from it
    assert "--array=1-1%16" in plan.stdout and "--dependency=afterok:$JOB --array=2-3%16" in plan.stdout
