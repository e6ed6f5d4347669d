"""benchmarks/report.py: every benchmark run as a subprocess, figures collected, absent or broken ones named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FOLLOWS = textwrap.dedent("""
    import argparse, json, os
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    print("step ratio 1.02" if not a.quick else "quick step ratio 1.05")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"title": "Step overhead", "quick": a.quick, "threads": os.environ.get("OMP_NUM_THREADS"),
                       "headline": [{"name": "step time ratio", "value": 1.05 if a.quick else 1.02, "unit": "x"}],
                       "tables": [{"title": "runs", "columns": ["setup", "s"], "rows": [["stock", 0.5]]}],
                       "nested": {"bytes_per_weight": {"mask": 1.0}}}, f)
""")
NO_JSON = "import argparse\nargparse.ArgumentParser().parse_args()\nprint('figures only on stdout: 42')\n"
BROKEN = "import argparse, sys\np = argparse.ArgumentParser()\np.add_argument('--json')\np.parse_args()\nsys.exit(4)\n"


def test_report_gathers_figures_and_names_missing_and_broken_benchmarks(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "overhead.py").write_text(FOLLOWS)
    (bench / "compressed_size.py").write_text(NO_JSON)
    (bench / "scaling.py").write_text(BROKEN)
    (bench / "extra_one.py").write_text(FOLLOWS + 'if __name__ == "__main__":\n    pass\n')
    (bench / "helper.py").write_text("def shared():\n    return 1\n")  # no __main__ block: not a benchmark
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), "--quick",
                           "--benchmarks-dir", str(bench), "--output", str(out), "--threads", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    outcomes = {o["name"]: o for o in json.loads((out / "REPORT.json").read_text())["outcomes"]}
    assert list(outcomes) == ["overhead", "distributed_overhead", "algorithms", "streaming_prune", "compressed_size",
                              "scaling", "extra_one"]
    assert outcomes["overhead"]["status"] == "ok" and outcomes["overhead"]["figures"]["quick"] is True
    assert outcomes["overhead"]["figures"]["threads"] == "1"
    assert "--quick" in outcomes["overhead"]["command"] and "--json" in outcomes["overhead"]["command"]
    assert outcomes["algorithms"]["status"] == "missing" and outcomes["streaming_prune"]["status"] == "missing"
    assert outcomes["compressed_size"]["status"] == "no-json"
    assert "--quick" not in outcomes["compressed_size"]["command"]  # not passed where not supported
    assert outcomes["scaling"]["status"] == "failed" and outcomes["scaling"]["detail"] == "exit code 4"
    assert outcomes["extra_one"]["status"] == "ok"
    md = (out / "REPORT.md").read_text()
    assert "| overhead | ok |" in md and "step time ratio: 1.05 x" in md
    assert "| algorithms | missing |" in md and "| scaling | failed |" in md
    assert "| stock | 0.5 |" in md and "nested.bytes_per_weight.mask = 1" in md
    assert "figures only on stdout: 42" in md

    (out / "REPORT.md").unlink()
    rendered = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), "--render",
                               "--output", str(out)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    assert (out / "REPORT.md").read_text().split("\n", 3)[3] == md.split("\n", 3)[3]  # same, bar the date line
