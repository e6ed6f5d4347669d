"""Wall times, commands and versions of a finished smc-bench results folder, for results/cpu-scale/.

    python scripts/cpu_scale_times.py RUNS_DIR OUT.csv   # also writes commands.txt and versions.json beside OUT.csv

Reads each cell's `result.json` (through `smc_hf.bench.scan_results`, so partial files are skipped and named).
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import sys

from smc_hf.bench import scan_results


def _portable(command: list[str]) -> list[str]:
    """`python run_glue_like.py ...` rather than this machine's interpreter and checkout paths."""
    if len(command) > 1 and os.path.basename(command[1]) == "run_glue_like.py":
        return ["python", "run_glue_like.py", *command[2:]]
    return command


def _runs_root(command: list[str], task: str) -> str | None:
    """The results directory a run was started in: its --output_dir up to the task's folder (the result file
    may since have been copied elsewhere, `smc-bench copy-results`)."""
    if "--output_dir" not in command[:-1]:
        return None
    output_dir = command[command.index("--output_dir") + 1]
    marker = f"{os.sep}{task}{os.sep}"
    return output_dir[: output_dir.index(marker)] if marker in output_dir else None


def main(runs_dir: str, out_csv: str) -> int:
    results, problems = scan_results(runs_dir)
    for problem in problems:
        print(f"not counted: {problem}", file=sys.stderr)
    rows, commands, versions = [], [], {}
    for result in sorted(results, key=lambda r: (r.task, r.method, r.sparsity)):
        with open(result.path, encoding="utf-8") as f:
            data = json.load(f)
        cell = data["cell"]
        rows.append({"task": cell["task"], "method": cell["method"], "sparsity": cell["sparsity"],
                     "seed": cell["seed"], "fold": cell.get("fold", ""), "metric": round(data["metric"], 2),
                     "wall_time_s": round(data.get("wall_time_s") or 0.0, 1),
                     "train_runtime_s": round(data.get("train_runtime") or 0.0, 1),
                     "attempts": data.get("attempts", 1), "shared_run": json.dumps(data.get("shared_run", ""))})
        root = _runs_root(data["command"], cell["task"]) or os.path.abspath(runs_dir)
        commands.append(shlex.join(_portable(data["command"])).replace(root, "$RUNS"))
        versions = data.get("versions", versions)
    os.makedirs(os.path.dirname(os.path.abspath(out_csv)), exist_ok=True)
    with open(out_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task"])
        writer.writeheader()
        writer.writerows(rows)
    folder = os.path.dirname(os.path.abspath(out_csv))
    with open(os.path.join(folder, "commands.txt"), "w", encoding="utf-8") as f:
        f.write("".join(c + "\n" for c in dict.fromkeys(commands)))
    with open(os.path.join(folder, "versions.json"), "w", encoding="utf-8") as f:
        json.dump(versions, f, indent=1, sort_keys=True)
    total = sum(r["wall_time_s"] for r in rows)
    print(f"{len(rows)} cells, {total / 3600:.2f} h of recorded wall time -> {out_csv}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
