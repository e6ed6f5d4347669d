"""Step cost of keeping masks exact across processes: DDP and FSDP2, two CPU processes over gloo.

For each backend, four setups train the same model in interleaved short bursts, so machine noise hits them
alike: `dense` (no callback), `fixed mask` (omp_before: masks found once; each step masks the gradients, and
AdamW keeps pruned weights and moments at zero by itself), `fixed, re-masked each step` (the same with an
AdamW subclass that smc_hf does not recognise as elementwise, so weights and moments are re-masked after every
step: what every placement did before, and what optimizers that mix entries still get) and `mask change every
step` (GMP updating at every step: under FSDP2 every update gathers the selected weights whole, and every change
is followed by the ranks' digest comparison). The Trainer's events are replayed through `SparsityCallback`, as
Accelerate's FSDP plugin needs GPUs. Prints median step times as ratios to dense: wall-clock, and CPU time of
the process (the work a step adds, which stays meaningful when the two processes share a busy core).

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
SETUPS = {  # name: (method, optimizer)
    "dense": (None, "adamw"),
    "fixed mask": ("omp_before", "adamw"),
    "fixed, re-masked each step": ("omp_before", "unrecognised adamw"),
    "mask change every step": ("gmp", "adamw"),
}
BACKENDS = ("ddp", "fsdp2")


def worker(opts) -> None:
    sys.path.insert(0, ROOT)
    import torch
    from accelerate import Accelerator
    from transformers import BertConfig, BertForSequenceClassification, TrainerControl, TrainerState
    from transformers import TrainingArguments

    from smc_hf import SparsityCallback, SparsityConfig

    class UnrecognisedAdamW(torch.optim.AdamW):
        """torch's AdamW under a class smc_hf does not list as elementwise: the same step, re-masked after it."""

    optimizers = {"adamw": torch.optim.AdamW, "unrecognised adamw": UnrecognisedAdamW}

    # TrainingArguments resets Accelerate's state, so it comes before the Accelerator.
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to=[], max_grad_norm=0.0)
    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=512, hidden_size=opts.hidden, num_hidden_layers=opts.layers,
                        num_attention_heads=4, intermediate_size=4 * opts.hidden, max_position_embeddings=128)
    base = BertForSequenceClassification(config)
    gen = torch.Generator().manual_seed(accelerator.process_index)
    batch = {"input_ids": torch.randint(5, 512, (8, opts.length), generator=gen), "labels": torch.randint(0, 2, (8,))}

    def build(backend, method, optimizer_name):
        model = copy.deepcopy(base)
        if backend == "fsdp2":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (accelerator.num_processes,))
            for layer in model.bert.encoder.layer:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            wrapped, optimizer = model, optimizers[optimizer_name](model.parameters(), lr=1e-4)
        else:
            optimizer = optimizers[optimizer_name](model.parameters(), lr=1e-4)
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
        start, cpu = time.perf_counter(), time.process_time()
        wrapped(**batch).loss.backward()
        if callback is not None:
            callback.on_pre_optimizer_step(args, state, control, model=unwrapped, optimizer=optimizer)
        optimizer.step()
        if callback is not None:
            callback.on_optimizer_step(args, state, control, model=unwrapped, optimizer=optimizer)
        optimizer.zero_grad()
        state.global_step += 1
        cpu = time.process_time() - cpu  # before the barrier: waiting for the other rank is not this step's work
        accelerator.wait_for_everyone()
        return time.perf_counter() - start, cpu

    results = {}
    for backend in BACKENDS:
        runs = {name: build(backend, *setup) for name, setup in SETUPS.items()}
        times = {name: [] for name in runs}
        for name in runs:
            step(runs[name])  # warm-up
        for _ in range(opts.rounds):
            for name, run in runs.items():
                times[name].extend(step(run) for _ in range(opts.burst))
        results[backend] = {
            name: {"wall": statistics.median(w for w, _ in t), "cpu": statistics.median(c for _, c in t)}
            for name, t in times.items()
        }
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
    parser.add_argument("--rounds", type=int, default=12, help=argparse.SUPPRESS)
    parser.add_argument("--burst", type=int, default=2, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        worker(opts)
        return 0
    size = ["--layers", "2", "--hidden", "64", "--length", "32", "--rounds", "6"] if opts.quick else []
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
            wall, cpu = times[backend][name]["wall"], times[backend][name]["cpu"]
            rows.append([backend, name, round(wall * 1000, 2), round(wall / dense["wall"], 3),
                         round(cpu * 1000, 2), round(cpu / dense["cpu"], 3)])
            if name != "dense":
                for kind in ("wall", "cpu"):
                    headline.append({
                        "name": f"{backend} step {kind} time, {name} / dense",
                        "value": round(times[backend][name][kind] / dense[kind], 3), "unit": "x",
                        "note": "2 CPU processes, gloo",
                    })
    print(f"{'backend':8} {'setup':28} {'wall ms':>9} {'/ dense':>8} {'cpu ms':>9} {'/ dense':>8}")
    for backend, name, wall, wall_ratio, cpu, cpu_ratio in rows:
        print(f"{backend:8} {name:28} {wall:9.2f} {wall_ratio:8.3f} {cpu:9.2f} {cpu_ratio:8.3f}")
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump({
                "title": "Mask upkeep across processes: DDP and FSDP2 step time vs dense (2 CPU processes, gloo)",
                "headline": headline,
                "tables": [{"title": "median step time (wall clock; CPU time of the process)",
                            "columns": ["backend", "setup", "wall ms", "/ dense", "cpu ms", "/ dense"],
                            "rows": rows}],
                "quick": opts.quick,
            }, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
