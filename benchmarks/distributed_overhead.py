"""Step cost of keeping masks exact across processes: DDP and FSDP2, two CPU processes over gloo.

For each backend, three setups train the same model in interleaved short bursts, so machine noise hits them
alike: `dense` (no callback), `fixed mask` (omp_before: masks found once, then applied after every step) and
`mask change every step` (GMP updating at every step: under FSDP2 every update gathers the selected weights
whole, and every change is followed by the ranks' digest comparison). The Trainer's events are replayed through
`SparsityCallback`, as Accelerate's FSDP plugin needs GPUs. Prints median step times as ratios to dense.

    python benchmarks/distributed_overhead.py            # 4 layers, hidden 256, batch 8 x 64 per process
    python benchmarks/distributed_overhead.py --quick    # 2 layers, hidden 64
    python benchmarks/distributed_overhead.py --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUPS = {"dense": None, "fixed mask": "omp_before", "mask change every step": "gmp"}
BACKENDS = ("ddp", "fsdp2")


def worker(opts) -> None:
    sys.path.insert(0, ROOT)
    import torch
    from accelerate import Accelerator
    from transformers import BertConfig, BertForSequenceClassification, TrainerControl, TrainerState
    from transformers import TrainingArguments

    from smc_hf import SparsityCallback, SparsityConfig

    # TrainingArguments resets Accelerate's state, so it comes before the Accelerator.
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to=[], max_grad_norm=0.0)
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=512, hidden_size=opts.hidden, num_hidden_layers=opts.layers,
                        num_attention_heads=4, intermediate_size=4 * opts.hidden, max_position_embeddings=128)
    base = BertForSequenceClassification(config)
    gen = torch.Generator().manual_seed(accelerator.process_index)
    batch = {"input_ids": torch.randint(5, 512, (8, opts.length), generator=gen), "labels": torch.randint(0, 2, (8,))}

    def build(backend, method):
        model = copy.deepcopy(base)
        if backend == "fsdp2":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (accelerator.num_processes,))
            for layer in model.bert.encoder.layer:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            wrapped, optimizer = model, torch.optim.AdamW(model.parameters(), lr=1e-4)
        else:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            wrapped, optimizer = accelerator.prepare(model, optimizer)
        unwrapped = model if backend == "fsdp2" else accelerator.unwrap_model(wrapped)
        state, control = TrainerState(max_steps=10**6), TrainerControl()
        callback = None
        if method is not None:
            schedule = dict(update_every=1, begin_step=1, end_step=10**6 - 1) if method == "gmp" else {}
            callback = SparsityCallback(SparsityConfig(method=method, sparsity=0.5, **schedule))
            callback.on_train_begin(args, state, control, model=unwrapped, optimizer=optimizer)
        return wrapped, unwrapped, optimizer, callback, state, control

    def step(run):
        wrapped, unwrapped, optimizer, callback, state, control = run
        start = time.perf_counter()
        wrapped(**batch).loss.backward()
        if callback is not None:
            callback.on_pre_optimizer_step(args, state, control, model=unwrapped, optimizer=optimizer)
        optimizer.step()
        if callback is not None:
            callback.on_optimizer_step(args, state, control, model=unwrapped, optimizer=optimizer)
        optimizer.zero_grad()
        state.global_step += 1
        accelerator.wait_for_everyone()
        return time.perf_counter() - start

    results = {}
    for backend in BACKENDS:
        runs = {name: build(backend, method) for name, method in SETUPS.items()}
        times = {name: [] for name in runs}
        for name in runs:
            step(runs[name])  # warm-up
        for _ in range(opts.rounds):
            for name, run in runs.items():
                times[name].extend(step(run) for _ in range(opts.burst))
        results[backend] = {name: statistics.median(t) for name, t in times.items()}
    if accelerator.is_main_process:
        with open(opts.worker, "w") as handle:
            json.dump(results, handle)
    accelerator.wait_for_everyone()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=6, help=argparse.SUPPRESS)
    parser.add_argument("--burst", type=int, default=3, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        worker(opts)
        return 0
    size = ["--layers", "2", "--hidden", "64", "--length", "32", "--rounds", "4"] if opts.quick else []
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
        sock.close()
        out = os.path.join(tmp, "times.json")
        print(f"2 processes over gloo, {'quick' if opts.quick else 'full'} size ...", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), HF_HUB_OFFLINE="1")
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", port, os.path.abspath(__file__), "--worker", out, *size],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-6000:], file=sys.stderr)
            return 1
        with open(out) as handle:
            times = json.load(handle)
    rows, headline = [], []
    for backend in BACKENDS:
        dense = times[backend]["dense"]
        for name in SETUPS:
            ratio = times[backend][name] / dense
            rows.append([backend, name, round(times[backend][name] * 1000, 2), round(ratio, 3)])
            if name != "dense":
                headline.append({"name": f"{backend} step time, {name} / dense", "value": round(ratio, 3),
                                 "unit": "x", "note": "2 CPU processes, gloo"})
    print(f"{'backend':8} {'setup':24} {'ms/step':>9} {'/ dense':>8}")
    for backend, name, ms, ratio in rows:
        print(f"{backend:8} {name:24} {ms:9.2f} {ratio:8.3f}")
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump({
                "title": "Mask upkeep across processes: DDP and FSDP2 step time vs dense (2 CPU processes, gloo)",
                "headline": headline,
                "tables": [{"title": "median step time", "columns": ["backend", "setup", "ms/step", "/ dense"],
                            "rows": rows}],
                "quick": opts.quick,
            }, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
