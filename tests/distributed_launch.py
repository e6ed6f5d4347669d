"""Launching the multi-process test drivers: free ports, an offline single-threaded environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true", OMP_NUM_THREADS="1", PYTHONPATH=ROOT,
    )
    env.update(extra)
    return env


def accelerate_launch(script: str, args: list[str], processes: int = 2, timeout: int = 300, **env):
    """`accelerate launch --multi_gpu --num_processes N` (gloo on a machine without GPUs; the script gets
    `--use_cpu True`), or plain python for one process."""
    if processes == 1:
        command = [sys.executable, os.path.join(TESTS, script)]
    else:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), os.path.join(TESTS, script),
        ]
    return subprocess.run(command + args, cwd=ROOT, env=environment(**env), capture_output=True, text=True,
                          timeout=timeout)


def torch_run(script: str, args: list[str], processes: int = 2, timeout: int = 300):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_port", str(free_port()), os.path.join(TESTS, script),
    ]
    return subprocess.run(command + args, cwd=ROOT, env=environment(), capture_output=True, text=True,
                          timeout=timeout)


def check(result: subprocess.CompletedProcess) -> None:
    if result.returncode != 0:
        raise AssertionError(f"exit status {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
