"""Run every benchmark and gather its figures into one Markdown report.

Each benchmark runs as a subprocess with `--json PATH` (and `--quick` when given and supported), following
the convention in benchmarks/README.md. Missing, failing or timed-out benchmarks are reported as such.

    python benchmarks/report.py [--quick] [--output out/benchmarks] [--only overhead,scaling]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: Report order; other scripts found in benchmarks/ follow.
BENCHMARKS = ["overhead", "distributed_overhead", "algorithms", "streaming_prune", "compressed_size", "scaling"]
_OUTPUT_TAIL = 40
_HELP_TIMEOUT_S = 120


@dataclass
class Outcome:
    name: str
    status: str  # ok, missing, failed, timeout, no-json
    seconds: float = 0.0
    command: list[str] = field(default_factory=list)
    output: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


def is_benchmark(path: str) -> bool:
    """A script with a `__main__` block; helper modules (rss.py) have none."""
    with open(path, encoding="utf-8") as handle:
        return 'if __name__ == "__main__"' in handle.read()


def discover(folder: str, only: Optional[list[str]]) -> list[str]:
    found = sorted(f[:-3] for f in os.listdir(folder)
                   if f.endswith(".py") and f != "report.py" and is_benchmark(os.path.join(folder, f)))
    names = BENCHMARKS + [n for n in found if n not in BENCHMARKS]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise SystemExit(f"--only: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in only]
    return names


THREADS: Optional[int] = None  # set from --threads


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=ROOT + (os.pathsep + path if path else ""), HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    if THREADS:
        env.update(OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    return env


def run_benchmark(folder: str, name: str, out_dir: str, quick: bool, timeout: float) -> Outcome:
    script = os.path.join(folder, f"{name}.py")
    if not os.path.isfile(script):
        return Outcome(name, "missing", detail=f"{name}.py does not exist yet")
    try:
        helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                                timeout=_HELP_TIMEOUT_S, env=_env(), cwd=ROOT)
    except subprocess.TimeoutExpired:
        return Outcome(name, "failed", detail="`--help` did not answer")
    if helped.returncode != 0:
        return Outcome(name, "failed", output=_tail(helped.stdout + helped.stderr), detail="`--help` failed")
    json_path = os.path.join(out_dir, f"{name}.json")
    if os.path.exists(json_path):
        os.remove(json_path)
    command = [sys.executable, script]
    if "--json" in helped.stdout:
        command += ["--json", json_path]
    if quick and "--quick" in helped.stdout:
        command.append("--quick")
    start = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT)
    timed_out = threading.Event()

    def stop():
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(timeout, stop)
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            print(f"  [{name}] {line.rstrip()}", flush=True)
        code = proc.wait()
    finally:
        watchdog.cancel()
        seconds = time.monotonic() - start
    outcome = Outcome(name, "ok", seconds, command, _tail("".join(lines)))
    if timed_out.is_set():
        outcome.status, outcome.detail = "timeout", f"killed after {timeout:.0f} s"
    elif code != 0:
        outcome.status, outcome.detail = "failed", f"exit code {code}"
    elif "--json" not in command:
        outcome.status, outcome.detail = "no-json", "does not take --json yet (see benchmarks/README.md)"
    if outcome.status == "ok" or os.path.exists(json_path):
        try:
            with open(json_path, encoding="utf-8") as handle:
                outcome.figures = json.load(handle)
            if not isinstance(outcome.figures, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            outcome.figures = {}
            if outcome.status == "ok":
                outcome.status, outcome.detail = "no-json", f"{json_path}: {err}"
    return outcome


def _tail(text: str) -> str:
    return "".join(text.splitlines(keepends=True)[-_OUTPUT_TAIL:])


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return f"[{', '.join(_value(v) for v in value[:12])}, ...] ({len(value)} items)"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_value(v) for v in value)}]"
    return str(value)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts (and lists of dicts) as (dotted.key, value) pairs."""
    if isinstance(data, list) and any(isinstance(item, dict) for item in data):
        data = {str(i): item for i, item in enumerate(data)}
    if isinstance(data, dict):
        items: list[tuple[str, Any]] = []
        for key, value in data.items():
            items += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return items
    return [(prefix, data)]


def headline_text(figures: dict[str, Any]) -> str:
    parts = []
    for item in figures.get("headline", []) if isinstance(figures.get("headline"), list) else []:
        if isinstance(item, dict) and "name" in item and "value" in item:
            unit = item.get("unit", "")
            parts.append(f"{item['name']}: {_value(item['value'])}{'' if unit in ('', None) else ' ' + str(unit)}")
    return "; ".join(parts)


def _cell(value: Any) -> str:
    return _value(value).replace("|", "\\|").replace("\n", " ")


def markdown(outcomes: list[Outcome], quick: bool, machine: dict[str, Any]) -> str:
    lines = [
        "# smc_hf performance report", "",
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; {'quick' if quick else 'full'} configurations; "
        + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".", "",
        "| benchmark | status | time | key figures |", "|---|---|---:|---|",
    ]
    for o in outcomes:
        summary = headline_text(o.figures) or o.detail or ("see below" if o.figures else "")
        lines.append(f"| {o.name} | {o.status} | {o.seconds:.0f} s | {_cell(summary)} |")
    for o in outcomes:
        lines += ["", f"## {o.name}", ""]
        if o.status != "ok":
            lines += [f"**{o.status}**: {o.detail}", ""]
        figures = dict(o.figures)
        if "title" in figures:
            lines += [str(figures.pop("title")), ""]
        headline = figures.pop("headline", None)
        if isinstance(headline, list) and headline:
            lines += ["| figure | value | unit | note |", "|---|---:|---|---|"]
            for item in headline:
                if isinstance(item, dict):
                    lines.append(f"| {_cell(item.get('name', ''))} | {_cell(item.get('value', ''))} | "
                                 f"{_cell(item.get('unit', ''))} | {_cell(item.get('note', ''))} |")
            lines.append("")
        for table in figures.pop("tables", None) or []:
            if not isinstance(table, dict) or "columns" not in table:
                continue
            if table.get("title"):
                lines += [f"**{table['title']}**", ""]
            columns = table["columns"]
            lines += ["| " + " | ".join(map(_cell, columns)) + " |", "|" + "---:|" * len(columns)]
            lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in table.get("rows", [])]
            lines.append("")
        for image in figures.pop("figures", None) or []:
            lines += [f"![{o.name}]({image})", ""]
        rest = flatten(figures)
        if rest:
            lines += ["<details><summary>all figures</summary>", "", "```"]
            lines += [f"{key} = {_value(value)}" for key, value in rest]
            lines += ["```", "", "</details>", ""]
        if o.output:
            lines += ["<details><summary>output (tail)</summary>", "", "```", o.output.rstrip(), "```", "",
                      "</details>"]
    return "\n".join(lines) + "\n"


def write_markdown(outcomes: list[Outcome], quick: bool, machine: dict[str, Any], out_dir: str) -> str:
    path = os.path.join(out_dir, "REPORT.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(markdown(outcomes, quick, machine))
    return path


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "OMP_NUM_THREADS": THREADS or os.environ.get("OMP_NUM_THREADS", "unset")}
    try:
        import psutil

        info["RAM GiB"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        pass
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark that takes it")
    parser.add_argument("--output", default=os.path.join(ROOT, "out", "benchmarks"), help="report folder")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--timeout", type=float, help="seconds per benchmark (default 900 with --quick, else 7200)")
    parser.add_argument("--benchmarks-dir", default=HERE, help="where the benchmark scripts are (default: here)")
    parser.add_argument("--threads", type=int,
                        help="OMP_NUM_THREADS for every benchmark (1 keeps timings stable on a busy machine)")
    parser.add_argument("--render", action="store_true",
                        help="only rebuild REPORT.md from the REPORT.json already in --output (runs nothing)")
    opts = parser.parse_args(argv)
    global THREADS
    THREADS = opts.threads
    if opts.render:
        with open(os.path.join(opts.output, "REPORT.json"), encoding="utf-8") as handle:
            saved = json.load(handle)
        write_markdown([Outcome(**o) for o in saved["outcomes"]], saved["quick"], saved["machine"], opts.output)
        return 0
    timeout = opts.timeout or (900.0 if opts.quick else 7200.0)
    names = discover(opts.benchmarks_dir, [n.strip() for n in opts.only.split(",")] if opts.only else None)
    os.makedirs(opts.output, exist_ok=True)
    outcomes = []
    for index, name in enumerate(names, 1):
        print(f"[{index}/{len(names)}] {name}", flush=True)
        outcome = run_benchmark(opts.benchmarks_dir, name, opts.output, opts.quick, timeout)
        print(f"[{index}/{len(names)}] {name}: {outcome.status} in {outcome.seconds:.0f} s"
              + (f" ({outcome.detail})" if outcome.detail else ""), flush=True)
        outcomes.append(outcome)
    machine = machine_info()
    with open(os.path.join(opts.output, "REPORT.json"), "w", encoding="utf-8") as handle:
        json.dump({"quick": opts.quick, "machine": machine, "outcomes": [asdict(o) for o in outcomes]}, handle,
                  indent=2)
    path = write_markdown(outcomes, opts.quick, machine, opts.output)
    print(f"\nreport: {path}")
    for o in outcomes:
        print(f"  {o.name:<18} {o.status:<8} {headline_text(o.figures) or o.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
