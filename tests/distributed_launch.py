"""Launching the multi-process test drivers: free ports, an offline single-threaded environment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def tiny_csqa(root) -> tuple[str, str]:
    """CommonsenseQA-format data and a saved tiny RoBERTa without dropout (so runs with different process
    counts compute the same numbers): (train file, model folder)."""
    import torch
    from transformers import RobertaConfig, RobertaForMultipleChoice

    from tests.task_fixtures import TINY, csqa_rows, roberta_tokenizer, write_jsonl

    data = write_jsonl(str(root / "train.jsonl"), csqa_rows(16))
    model_dir = str(root / "roberta")
    tokenizer = roberta_tokenizer(["Q: Where is money kept? A: bank library store mall park"], model_dir)
    config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=160, pad_token_id=1,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **TINY)
    torch.manual_seed(0)
    RobertaForMultipleChoice(config).save_pretrained(model_dir)
    return data, model_dir


def read_ranks(out) -> list[dict]:
    """The `rank-<i>.json` records `distributed_driver.py` wrote, in rank order."""
    import json

    records = []
    for name in sorted(os.listdir(out)):
        if name.startswith("rank-"):
            with open(os.path.join(out, name)) as handle:
                records.append(json.load(handle))
    return sorted(records, key=lambda r: r["process_index"])


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


def accelerate_launch(script: str, args: list[str], processes: int = 2, timeout: int = 300, config=None, **env):
    """`accelerate launch` of a test script: with `config` (a file in scripts/accelerate), that config; else
    `--multi_gpu --num_processes N` (gloo on a machine without GPUs, where the script gets `--use_cpu True`),
    or plain python for one process."""
    if config is not None:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            os.path.join(ROOT, "scripts", "accelerate", config), "--num_processes", str(processes),
            "--main_process_port", str(free_port()), os.path.join(TESTS, script),
        ]
    elif processes == 1:
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
