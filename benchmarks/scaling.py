"""Time and peak memory of one-shot global magnitude pruning vs model size, with the growth rate.

Models are stacks of BERT-shaped Linear layers (per layer: query, key, value, attention output h x h, FFN
h x 4h and 4h x h), randomly initialised, fp32 on CPU, from 10M to 1B selected weights. Each size runs in a
fresh worker process so its peak RSS is its own. In the worker, on the same weights:

- `prune_model(omp, global, 90%)`: smc_hf (radix selection, |w| recomputed per layer in each pass);
- the floor: one histogram pass, `torch.bincount` of the top 16 bits of each layer's |w| keys (reading every
  weight once: no exact global selection can do with less);
- the previous algorithm (kept here only, as the baseline): all |w| stored as keys, the k-th smallest found by
  32 bisection passes each counting over every weight, then the masks;
- torch.nn.utils.prune.global_unstructured (L1), which concatenates all scores (skipped above --baseline-max).

Peak memory is the rise of the peak RSS over the RSS before the call (the kernel's high-water mark, reset
before each call, after freed memory is returned to the OS; one untimed prune of a small model first, so
that one-off process state is not counted per weight). Targets, printed as ratios of the same run: smc_hf within 4x of the histogram pass,
faster than the bisection at every size, peak extra <= 1.25 B per selected weight plus one layer's scratch
(9 B per weight of the largest layer), time and memory growth exponents <= 1.05.

Growth rate: the least-squares slope of log(time) and of log(peak extra memory) against log(weights) over
the sizes measured (1.0 = linear). Sizes that would not fit in the available RAM are skipped with a note.

    python benchmarks/scaling.py                 # 10M .. 1B (the 1B prune needs ~16 GB free)
    python benchmarks/scaling.py --quick         # 1M, 3M, 10M
    python benchmarks/scaling.py --sizes 10M,100M --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rss import release_memory, reset_peak, status_bytes  # noqa: E402

#: name -> (hidden size, layers); 12 h^2 weights per layer.
SIZES = {
    "1M": (128, 5), "3M": (256, 4), "10M": (256, 13), "30M": (512, 10), "100M": (768, 14),
    "300M": (1024, 24), "600M": (1536, 21), "1B": (2048, 20),
}
FULL = ["10M", "30M", "100M", "300M", "600M", "1B"]
QUICK = ["1M", "3M", "10M"]

SPARSITY = 0.9
_GIB = 2**30


def weights_of(size: str) -> int:
    hidden, layers = SIZES[size]
    return 12 * hidden * hidden * layers


# -- worker (one size, one process) ---------------------------------------------------------------------

def _measure(fn):
    """(seconds, peak RSS rise in bytes) of fn()."""
    release_memory()
    resettable = reset_peak()
    before = status_bytes("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM") if resettable else before
    del result
    return seconds, max(peak - before, 0)


def build_model(hidden: int, layers: int):
    from torch import nn

    shapes = {"query": (hidden, hidden), "key": (hidden, hidden), "value": (hidden, hidden),
              "attention_output": (hidden, hidden), "intermediate": (4 * hidden, hidden),
              "output": (hidden, 4 * hidden)}
    model = nn.ModuleList(
        nn.ModuleDict({n: nn.Linear(i, o, device="meta") for n, (o, i) in shapes.items()}) for _ in range(layers)
    )
    return model.to_empty(device="cpu")


def fill(model, seed: int = 0) -> None:
    """The same random weights every time (in place, no temporaries)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02, generator=gen)


def histogram_pass(model) -> None:
    """The floor: one `torch.bincount` of the top 16 bits of every weight's |w| key, per layer, in one table."""
    import torch

    table = torch.zeros(1 << 16, dtype=torch.int64)
    with torch.no_grad():
        for layer in model:
            for module in layer.values():
                keys = module.weight.abs().view(torch.int32).reshape(-1)
                table += torch.bincount((keys >> 16) + 32768, minlength=1 << 16)
    return table


def bisection_prune(model, sparsity: float) -> None:
    """The previous selection, kept as the baseline: every |w| held as an int32 key (4 B/weight), the k-th
    smallest found by bisection over the int32 range (32 counting passes over all weights), ties by layer
    then position, then the masks applied."""
    import torch

    weights = [m.weight for layer in model for m in layer.values()]
    with torch.no_grad():
        keys = [w.abs().view(torch.int32) for w in weights]  # |w| >= 0: its bits already order like its value
        k = round(sparsity * sum(t.numel() for t in keys))
        lo, hi = -(2**31), 2**31 - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if sum(int((t <= mid).sum()) for t in keys) >= k:
                hi = mid
            else:
                lo = mid + 1
        remaining = k - sum(int((t < lo).sum()) for t in keys)
        masks = []
        for t in keys:
            keep = t > lo
            ties = (t == lo).flatten().nonzero().squeeze(1)
            n = min(remaining, ties.numel())
            keep.view(-1)[ties[n:]] = True
            remaining -= n
            masks.append(keep)
        del keys
        torch._foreach_mul_(weights, masks)
    return masks


def worker(size: str, repeats: int, baseline: bool, threads: int, bisection: bool) -> dict:
    import torch
    from torch.nn.utils import prune as torch_prune

    from smc_hf import SparsityConfig, prune_model

    if threads:
        torch.set_num_threads(threads)

    hidden, layers = SIZES[size]
    rss0 = status_bytes("VmRSS")
    model = build_model(hidden, layers)
    fill(model)
    config = SparsityConfig(method="omp", sparsity=SPARSITY, distribution="global")
    out = {"size": size, "weights": weights_of(size), "hidden": hidden, "layers": layers,
           "model_bytes": status_bytes("VmRSS") - rss0, "threads": torch.get_num_threads()}
    warm = build_model(128, 1)  # first calls allocate torch's and the process's one-off state: not per weight
    fill(warm)
    prune_model(warm, config)
    histogram_pass(warm)
    del warm
    times, peaks, kept = [], [], []
    for r in range(repeats):
        if r:
            fill(model)
        kept.clear()
        seconds, peak = _measure(lambda: kept.append(prune_model(model, config)))
        times.append(seconds)
        peaks.append(peak)
    zeros = sum(int((m.weight == 0).sum()) for layer in model for m in layer.values())
    out["achieved_sparsity"] = zeros / out["weights"]
    out["smc"] = {"seconds": statistics.median(times), "all_seconds": times, "peak_extra_bytes": max(peaks)}
    out["largest_layer"] = max(p.numel() for p in model.parameters())
    fill(model)  # the floor on the same weights the prune saw
    times, peaks = [], []
    for _ in range(repeats):
        seconds, peak = _measure(lambda: histogram_pass(model))
        times.append(seconds)
        peaks.append(peak)
    out["histogram"] = {"seconds": statistics.median(times), "all_seconds": times, "peak_extra_bytes": max(peaks)}
    if bisection:
        fill(model)
        old = []
        seconds, peak = _measure(lambda: old.append(bisection_prune(model, SPARSITY)))
        new = kept[0].masks.values()
        out["bisection"] = {"seconds": seconds, "peak_extra_bytes": peak,
                            "same_masks": all(torch.equal(a, b) for a, b in zip(new, old[0]))}
        del old
    kept.clear()
    if baseline:
        fill(model)
        targets = [(m, "weight") for layer in model for m in layer.values()]
        seconds, peak = _measure(lambda: torch_prune.global_unstructured(
            targets, pruning_method=torch_prune.L1Unstructured, amount=SPARSITY))
        out["baseline"] = {"seconds": seconds, "peak_extra_bytes": peak}
    return out


# -- driver ---------------------------------------------------------------------------------------------
def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(points) < 2:
        return None
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else None


def available_bytes() -> int:
    import psutil

    return psutil.virtual_memory().available


def run_size(size: str, repeats: int, baseline: bool, threads: int, bisection: bool) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", size, "--repeats", str(repeats),
               "--threads", str(threads)]
    if baseline:
        command.append("--baseline")
    if bisection:
        command.append("--bisection")
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker for {size} failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(lines[-1][len("RESULT "):])


SERIES = (("smc", "smc_hf prune_model (omp, global)", "o-"),
          ("histogram", "one histogram pass (the floor)", "^:"),
          ("bisection", "previous algorithm (bisection)", "d-."),
          ("baseline", "torch.nn.utils.prune.global_unstructured", "s--"))


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for key, label, style in SERIES:
        points = [r for r in rows if r.get(key)]
        if not points:
            continue
        xs = [r["weights"] for r in points]
        ax_t.plot(xs, [r[key]["seconds"] for r in points], style, label=label)
        if key != "histogram":
            ax_m.plot(xs, [max(r[key]["peak_extra_bytes"], 1) / _GIB for r in points], style, label=label)
    for ax, ylabel in ((ax_t, "prune time (s)"), (ax_m, "peak extra memory (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("selected weights")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", color="#e0e0e0")
    ax_t.legend(fontsize=8)
    fig.suptitle(f"One-shot global magnitude pruning to {SPARSITY:.0%}, fp32, CPU")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def memory_budget(row: dict) -> float:
    """The target's bound on peak extra memory: 1.25 B per selected weight plus one layer's scratch (a float32
    and an int32 buffer of the largest layer, and its 1-byte comparison)."""
    return 1.25 * row["weights"] + 9 * row["largest_layer"]


def describe(row: dict) -> str:
    n, smc = row["weights"], row["smc"]
    line = (f"{row['size']:>5}: prune {smc['seconds']:.3f} s ({1e9 * smc['seconds'] / n:.2f} ns/weight), "
            f"peak +{smc['peak_extra_bytes'] / _GIB:.3f} GiB ({smc['peak_extra_bytes'] / n:.2f} B/weight, "
            f"budget {memory_budget(row) / n:.2f}), sparsity {row['achieved_sparsity']:.4f}; "
            f"histogram pass {row['histogram']['seconds']:.3f} s (smc_hf x{_ratio(smc['seconds'], row['histogram']['seconds']):.2f})")
    old = row.get("bisection")
    if old:
        line += (f"; bisection {old['seconds']:.3f} s, +{old['peak_extra_bytes'] / n:.2f} B/weight "
                 f"(smc_hf {_ratio(old['seconds'], smc['seconds']):.2f}x faster, same masks: {old['same_masks']})")
    b = row.get("baseline")
    if b:
        line += (f"; torch prune {b['seconds']:.3f} s, +{b['peak_extra_bytes'] / _GIB:.3f} GiB "
                 f"(smc_hf/torch: time x{_ratio(smc['seconds'], b['seconds']):.2f}, "
                 f"memory x{_ratio(smc['peak_extra_bytes'], b['peak_extra_bytes']):.2f})")
    return line


def measure(sizes: list[str], repeats: int, baseline_max: float, bisection_max: float, threads: int, margin: float):
    """Run each size that fits in the available memory (less `margin` bytes left for everyone else)."""
    rows, skipped = [], []
    # bytes per weight, model included, until measured (the bisection adds 4 B of keys and 1 B of masks)
    per_weight = {"smc": 8.0, "baseline": 48.0, "bisection": 11.0}
    for size in sizes:
        n = weights_of(size)
        free = available_bytes()
        need = n * per_weight["smc"] + margin
        if need > free:
            skipped.append({"size": size, "weights": n, "needs_bytes": need, "available_bytes": free})
            print(f"{size:>5}: skipped, needs ~{need / _GIB:.1f} GiB with the margin, {free / _GIB:.1f} GiB available",
                  flush=True)
            continue
        baseline = n <= baseline_max and n * per_weight["baseline"] + margin <= free
        bisection = n <= bisection_max and n * per_weight["bisection"] + margin <= free
        runs = repeats if n < 1e8 else 1
        extra = "".join([" + bisection" if bisection else "", " + torch prune" if baseline else ""])
        print(f"{size:>5}: {n:,} weights, {runs} timed prune(s) + histogram pass{extra} ...", flush=True)
        row = run_size(size, runs, baseline, threads, bisection)
        rows.append(row)
        for key in ("smc", "baseline"):
            if row.get(key):
                per_weight[key] = (row["model_bytes"] + row[key]["peak_extra_bytes"]) / n
        print(describe(row), flush=True)
    return rows, skipped


def summarize(rows: list[dict], skipped: list[dict]) -> dict:
    """Headline figures (the targets as ratios), the per-size table, growth exponents, extrapolations."""
    big = [r for r in rows if r["weights"] >= 1e7]
    fit = big if len(big) >= 2 else rows
    xs = [r["weights"] for r in fit]
    time_slope = slope(xs, [r["smc"]["seconds"] for r in fit])
    mem_slope = slope(xs, [r["smc"]["peak_extra_bytes"] for r in fit])
    largest = rows[-1]
    table = []
    for r in rows:
        n, smc, old, b = r["weights"], r["smc"], r.get("bisection"), r.get("baseline")
        table.append([
            r["size"], n, round(smc["seconds"], 4), round(1e9 * smc["seconds"] / n, 3),
            round(smc["peak_extra_bytes"] / n, 3), round(memory_budget(r) / n, 3),
            round(r["histogram"]["seconds"], 4), round(_ratio(smc["seconds"], r["histogram"]["seconds"]), 2),
            round(old["seconds"], 3) if old else "-", round(_ratio(old["seconds"], smc["seconds"]), 2) if old else "-",
            round(old["peak_extra_bytes"] / n, 2) if old else "-",
            round(b["seconds"], 3) if b else "-", round(b["peak_extra_bytes"] / n, 2) if b else "-",
        ])
    sizes_text = ", ".join(r["size"] for r in fit)
    worst_floor = max(rows, key=lambda r: _ratio(r["smc"]["seconds"], r["histogram"]["seconds"]))
    worst_memory = max(rows, key=lambda r: r["smc"]["peak_extra_bytes"] / memory_budget(r))
    headline = [
        {"name": "prune time / one histogram pass, worst size (target <= 4)",
         "value": round(_ratio(worst_floor["smc"]["seconds"], worst_floor["histogram"]["seconds"]), 2), "unit": "x",
         "note": f"at {worst_floor['size']}"},
        {"name": "peak extra memory / budget (1.25 B/weight + one layer's scratch), worst size (target <= 1)",
         "value": round(worst_memory["smc"]["peak_extra_bytes"] / memory_budget(worst_memory), 3), "unit": "x",
         "note": f"at {worst_memory['size']}: {worst_memory['smc']['peak_extra_bytes'] / worst_memory['weights']:.2f} "
                 f"B/weight"},
    ]
    with_old = [r for r in rows if r.get("bisection")]
    if with_old:
        slowest = min(with_old, key=lambda r: _ratio(r["bisection"]["seconds"], r["smc"]["seconds"]))
        headline.append({
            "name": "speed-up over the previous algorithm (bisection), smallest over sizes (target > 1)",
            "value": round(_ratio(slowest["bisection"]["seconds"], slowest["smc"]["seconds"]), 2), "unit": "x",
            "note": f"at {slowest['size']}; masks equal at every size: "
                    f"{all(r['bisection']['same_masks'] for r in with_old)}"})
    headline += [
        {"name": "prune time growth exponent (log-log slope, target <= 1.05)", "value": _round(time_slope, 3),
         "note": f"over {sizes_text}; 1.0 = linear"},
        {"name": "peak memory growth exponent (log-log slope, target <= 1.05)", "value": _round(mem_slope, 3),
         "note": f"over {sizes_text}; 1.0 = linear"},
        {"name": f"prune time at {largest['size']}", "value": round(largest["smc"]["seconds"], 2), "unit": "s",
         "note": f"{largest['weights']:,} weights, {largest['threads']} thread(s)"},
        {"name": f"peak extra memory at {largest['size']}",
         "value": round(largest["smc"]["peak_extra_bytes"] / largest["weights"], 2), "unit": "B/weight",
         "note": f"{largest['smc']['peak_extra_bytes'] / _GIB:.2f} GiB beside a "
                 f"{largest['model_bytes'] / _GIB:.2f} GiB model"},
    ]
    with_baseline = [r for r in rows if r.get("baseline")]
    if with_baseline:
        r = with_baseline[-1]
        headline += [
            {"name": f"prune time, smc_hf / torch global_unstructured, at {r['size']}",
             "value": round(_ratio(r["smc"]["seconds"], r["baseline"]["seconds"]), 3), "unit": "x"},
            {"name": f"peak extra memory, smc_hf / torch global_unstructured, at {r['size']}",
             "value": round(_ratio(r["smc"]["peak_extra_bytes"], r["baseline"]["peak_extra_bytes"]), 3), "unit": "x"},
        ]
    for s in skipped:
        if time_slope is None or mem_slope is None:
            continue
        scale = s["weights"] / largest["weights"]
        s["extrapolated_seconds"] = largest["smc"]["seconds"] * scale ** time_slope
        s["extrapolated_peak_extra_bytes"] = largest["smc"]["peak_extra_bytes"] * scale ** mem_slope
        headline.append({
            "name": f"{s['size']} (not run: {s['available_bytes'] / _GIB:.1f} GiB free)",
            "value": f"~{s['extrapolated_seconds']:.0f} s, ~{s['extrapolated_peak_extra_bytes'] / _GIB:.1f} GiB",
            "note": f"extrapolated from {largest['size']} along the fitted slopes"})
    return {
        "title": f"One-shot global magnitude pruning (prune_model, omp, {SPARSITY:.0%}) vs model size: "
                 "fp32 BERT-shaped Linear stacks on CPU, each size in a fresh process",
        "headline": headline,
        "tables": [{"title": "per model size (peak = rise of the peak RSS during the call)", "columns": [
            "size", "weights", "prune s", "ns/weight", "peak B/weight", "budget B/weight", "histogram s",
            "x histogram", "bisection s", "speed-up", "bisection B/weight", "torch prune s",
            "torch peak B/weight"], "rows": table}],
        "rows": rows,
        "growth_exponent": {"time": time_slope, "peak_memory": mem_slope, "sizes": [r["size"] for r in fit]},
        "skipped": skipped,
    }


def _round(value, digits):
    return None if value is None else round(value, digits)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"sizes {','.join(QUICK)}")
    parser.add_argument("--sizes", help=f"comma-separated, from {', '.join(SIZES)} (default {','.join(FULL)})")
    parser.add_argument("--repeats", type=int, default=3, help="timed prunes per size below 100M weights")
    parser.add_argument("--baseline-max", type=float, default=1.1e8,
                        help="largest model (weights) on which to run the torch.nn.utils.prune baseline")
    parser.add_argument("--bisection-max", type=float, default=1.1e9,
                        help="largest model (weights) on which to run the previous (bisection) algorithm")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)),
                        help="torch threads (default: OMP_NUM_THREADS, else 1, stable on a shared machine)")
    parser.add_argument("--margin-gib", type=float, default=2.0,
                        help="memory to leave free: a size that would not is skipped (default 2 GiB)")
    parser.add_argument("--json", help="also write the figures (and scaling.png beside them)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bisection", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        print("RESULT " + json.dumps(worker(opts.worker, opts.repeats, opts.baseline, opts.threads, opts.bisection)), flush=True)
        return None

    sizes = opts.sizes.split(",") if opts.sizes else list(QUICK if opts.quick else FULL)
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; known: {', '.join(SIZES)}")
    sizes.sort(key=weights_of)
    rows, skipped = measure(sizes, opts.repeats, opts.baseline_max, opts.bisection_max, opts.threads,
                           opts.margin_gib * _GIB)
    if not rows:
        raise SystemExit("no size fitted in the available memory")
    figures = summarize(rows, skipped)
    print()
    for item in figures["headline"]:
        unit = item.get("unit", "")
        print(f"{item['name']}: {item['value']}{' ' + unit if unit else ''}"
              + (f"  ({item['note']})" if item.get("note") else ""))
    if opts.json:
        folder = os.path.dirname(os.path.abspath(opts.json))
        os.makedirs(folder, exist_ok=True)
        plot(rows, os.path.join(folder, "scaling.png"))
        figures["figures"] = ["scaling.png"]
        with open(opts.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return figures


if __name__ == "__main__":
    main()
