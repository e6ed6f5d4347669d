"""Streaming pruning of a multi-GB checkpoint vs a plain read + write of the same shards.

Generates a LLaMA-shaped fp32 checkpoint in 4 shards (random weights, written one tensor at a time), then
runs, each in a fresh subprocess so peak RSS is its own: the baseline (for every shard, `load_file` then
`save_file`: the least any shard-by-shard rewrite can do) and `prune_checkpoint_streaming` (global OMP at
50% by default: one histogram read pass over the selected weights, then the pruned read + write). Warm cache
(default): both jobs read from the page cache. `--cold`: the shards are evicted from the page cache
(posix_fadvise DONTNEED) before each job, so both read from disk. Prints time, throughput, peak RSS during the
job (VmHWM reset after imports; it counts mmap'd shard pages) and the ratios of pruning to the baseline;
checks the pruned count is exact. The generated folders are deleted afterwards.

    python benchmarks/streaming_prune.py                  # 3.8 GB in 4 shards
    python benchmarks/streaming_prune.py --size medium    # 1.5 GB in 4 shards
    python benchmarks/streaming_prune.py --quick          # 0.26 GB in 4 shards
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rss import peak_rss, reset_peak, status_bytes  # noqa: E402

SPARSITY = 0.5


#: LLaMA shapes (hidden, intermediate, layers) and shard count of each size.
PRESETS = {
    "quick": ((512, 1408, 8), 4),      # 0.26 GB
    "medium": ((1536, 4096, 10), 4),   # 1.5 GB
    "full": ((2048, 5632, 16), 4),     # 3.8 GB
}


def generate(folder: str, preset: str) -> dict:
    """A LLaMA-shaped checkpoint written tensor by tensor (never more than one tensor in memory), split into the
    preset's number of shards of about equal size."""
    import torch
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    from smc_hf.io.safetensors_io import DTYPE_NAMES, INDEX_FILE, SafetensorsWriter, TensorInfo

    (hidden, intermediate, layers), n_shards = PRESETS[preset]
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, vocab_size=32000)
    config.architectures = ["LlamaForCausalLM"]
    with init_empty_weights():
        model = LlamaForCausalLM(config)
    tensors = [(n, tuple(p.shape)) for n, p in model.state_dict().items()]
    shard_bytes = sum(4 * int(torch.Size(s).numel()) for _, s in tensors) / n_shards
    shards, current, size = [], [], 0
    for name, shape in tensors:  # a shard closes once it reaches 1/n of the total: at most n shards
        current.append((name, shape))
        size += 4 * int(torch.Size(shape).numel())
        if size >= shard_bytes:
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    os.makedirs(folder, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        plan = [TensorInfo(n, DTYPE_NAMES[torch.float32], s) for n, s in shard]
        with SafetensorsWriter(os.path.join(folder, file), plan, {"format": "pt"}) as writer:
            for name, shape in shard:
                value = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * 0.02
                writer.write(name, value)
                weight_map[name] = file
                total += value.numel() * 4
        print(f"  wrote {file}", flush=True)
    with open(os.path.join(folder, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    config.save_pretrained(folder)
    sizes = [os.path.getsize(os.path.join(folder, n)) for n in sorted(set(weight_map.values()))]
    return {"bytes": sum(sizes), "shards": len(sizes), "largest_shard": max(sizes),
            "weights": total // 4}


def child(mode: str, source: str, target: str, threads: int, method: str, distribution: str) -> None:
    """One measured job; prints a JSON line with its wall time and peak RSS."""
    import gc

    import torch
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(threads)

    from smc_hf import SparsityConfig
    from smc_hf.io.safetensors_io import checkpoint_files, open_safetensors
    from smc_hf.pruning.streaming import prune_checkpoint_streaming

    gc.collect()
    reset_peak()
    floor = status_bytes("VmRSS")
    start = time.perf_counter()
    if mode == "copy":
        os.makedirs(target)
        for path in checkpoint_files(source):
            with open_safetensors(path) as f:
                metadata = f.metadata()
            save_file(load_file(path), os.path.join(target, os.path.basename(path)), metadata=metadata)
        result = {}
    else:
        config = SparsityConfig(method=method, sparsity=SPARSITY, distribution=distribution)
        report = prune_checkpoint_streaming(source, target, config, progress=False)
        result = {"pruned": report.zeros, "selected": report.numel}
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss": peak_rss(), "floor_rss": floor, **result}), flush=True)


def evict(folder: str) -> None:
    """Drop the folder's files from the page cache (clean pages only; no root needed)."""
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(folder: str) -> None:
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as f:
            while f.read(1 << 24):
                pass


def run_child(mode: str, source: str, target: str, args) -> dict:
    shutil.rmtree(target, ignore_errors=True)
    os.sync()  # the previous job's dirty pages must not be flushed during this one
    if args.cold:
        evict(source)
    else:
        warm(source)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, source, target,
                           "--threads", str(args.threads), "--method", args.method,
                           "--distribution", args.distribution], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{proc.stdout}\n{proc.stderr}")
    shutil.rmtree(target, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(PRESETS), default="full", help="checkpoint size (default full)")
    parser.add_argument("--quick", action="store_true", help="same as --size quick")
    parser.add_argument("--cold", action="store_true", help="evict the shards from the page cache before each job")
    parser.add_argument("--method", default="omp", choices=["omp", "random"], help="streaming criterion (omp)")
    parser.add_argument("--distribution", default="global", choices=["global", "uniform", "erk"])
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each job (best time, worst RSS)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the checkpoint is generated")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 1),
                        help="torch threads of both jobs (default: OMP_NUM_THREADS, else 1: on a shared machine "
                        "OpenMP threads that outnumber free cores spin and slow elementwise work down several-fold)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, threads=args.threads, method=args.method, distribution=args.distribution)
        return 0
    size = "quick" if args.quick else args.size
    cache = "cold" if args.cold else "warm"
    work = tempfile.mkdtemp(prefix="smc_streaming_bench_", dir=args.dir)
    try:
        source = os.path.join(work, "source")
        print("generating the checkpoint ...", flush=True)
        info = generate(source, size)
        gb = info["bytes"] / 1e9
        print(f"checkpoint: {gb:.2f} GB in {info['shards']} shards (largest {info['largest_shard'] / 1e9:.2f} GB), "
              f"{cache} page cache")
        runs = {"copy": [], "prune": []}
        for repeat in range(args.repeats):
            for mode in ("copy", "prune"):
                result = run_child(mode, source, os.path.join(work, mode), args)
                runs[mode].append(result)
                print(f"  {mode} run {repeat + 1}: {result['seconds']:.1f} s, peak RSS "
                      f"{result['peak_rss'] / 1e9:.2f} GB", flush=True)
        best = {m: min(r["seconds"] for r in rs) for m, rs in runs.items()}
        rss = {m: max(r["peak_rss"] for r in rs) for m, rs in runs.items()}
        above = {m: max(r["peak_rss"] - r["floor_rss"] for r in rs) for m, rs in runs.items()}
        prune = runs["prune"][-1]
        exact = prune["pruned"] == round(SPARSITY * prune["selected"]) or args.distribution != "global"
        job = f"streaming prune ({args.method}, {args.distribution} {SPARSITY:.0%})"
        rows = []
        for mode, label in (("copy", "read + write shards (baseline)"), ("prune", job)):
            rows.append([label, round(best[mode], 2), round(gb / best[mode], 3), round(rss[mode] / 1e9, 3),
                         round(above[mode] / info["largest_shard"], 2)])
        columns = ["job", "seconds", "GB/s", "peak RSS GB", "(peak RSS - RSS after imports) / largest shard"]
        print()
        print("| " + " | ".join(columns) + " |")
        print("|---|---:|---:|---:|---:|")
        for row in rows:
            print("| " + " | ".join(str(x) for x in row) + " |")
        time_ratio = best["prune"] / best["copy"]
        rss_ratio = rss["prune"] / rss["copy"]
        print(f"\nprune / baseline ({cache} cache): time {time_ratio:.2f}x (target <= 2), peak RSS {rss_ratio:.2f}x; "
              f"prune peak RSS above imports / largest shard {above['prune'] / info['largest_shard']:.2f}x "
              f"(target <= 1.5); pruned {prune['pruned']:,} of {prune['selected']:,} selected weights"
              + (f" (exact: {exact})" if args.distribution == "global" else ""))
        figures = {
            "title": f"Streaming prune of a {gb:.1f} GB fp32 checkpoint ({info['shards']} shards, {cache} cache) "
                     "vs read+write",
            "headline": [
                {"name": "streaming prune time / read+write time", "value": round(time_ratio, 2), "unit": "x"},
                {"name": "streaming prune throughput", "value": round(gb / best["prune"], 3), "unit": "GB/s"},
                {"name": "streaming prune peak RSS above imports / largest shard",
                 "value": round(above["prune"] / info["largest_shard"], 2), "unit": "x",
                 "note": f"largest shard {info['largest_shard'] / 1e9:.2f} GB"},
                {"name": "streaming prune peak RSS / largest shard", "value": round(rss["prune"] / info["largest_shard"], 2),
                 "unit": "x", "note": "RSS includes the interpreter and imports"},
                {"name": "pruned count exact", "value": exact},
            ],
            "tables": [{"title": "jobs", "columns": columns, "rows": rows}],
            "checkpoint": info, "runs": runs, "torch_threads": args.threads, "cache": cache,
            "method": args.method, "distribution": args.distribution,
        }
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=2)
        return 0 if exact else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
