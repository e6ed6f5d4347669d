"""smc-bench end to end through the real run_glue_like.py: a 2-method x 2-sparsity x 1-task sweep on a tiny
RoBERTa and generated CSQA files, killed mid-way, resumed, then reported."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from smc_hf.cli import bench as cli
from tests.task_fixtures import csqa_rows, tiny_roberta_dir, write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "4",
            "--learning_rate", "1e-3", "--save_strategy", "no", "--logging_steps", "1", "--use_cpu", "True",
            "--report_to", "none"]


def wait_until_group_exits(pgid: int, timeout: float = 60.0) -> None:
    """Wait until no process of group `pgid` is still running (zombies have released their files and locks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                running.append(entry)
        if not running:
            return
        time.sleep(0.05)
    pytest.fail(f"processes {running} of the killed sweep's group {pgid} are still running after {timeout} s")


def test_sweep_killed_resumed_and_reported_through_run_glue_like(tmp_path):
    rows = csqa_rows(6)
    train = write_jsonl(str(tmp_path / "train.jsonl"), rows)
    dev = write_jsonl(str(tmp_path / "dev.jsonl"), rows[:4])
    model = tiny_roberta_dir(str(tmp_path / "roberta"), ["Q: Where is money kept? A: bank library store mall park"])
    out = tmp_path / "results"
    argv = ["run", "--tasks", "csqa", "--methods", "omp_before,random_before", "--sparsities", "0.3,0.6",
            "--seeds", "1", "--model", model, "--output", str(out),
            "--task-args", f"csqa=--train_file {train} --validation_file {dev}", "--", *TRAINING]

    sweep = subprocess.Popen([sys.executable, "-m", "smc_hf.cli.bench", *argv], env=dict(os.environ, PYTHONPATH=ROOT),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list(out.rglob("result.json"))) < 2:
        if sweep.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the sweep stopped before two cells were done: {sweep.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and the run it started
    sweep.wait()
    wait_until_group_exits(sweep.pid)  # the run holds the cell's lock until its (slower) exit is complete
    sweep.stderr.close()
    finished = {str(p): p.read_text() for p in out.rglob("result.json")}
    assert 2 <= len(finished) < 5

    assert cli.main(argv) == 0
    assert {p: open(p).read() for p in finished} == finished  # finished cells were skipped, not rerun
    files = sorted(out.rglob("result.json"))
    assert len(files) == 5
    cells = {}
    for path in files:
        data = json.loads(path.read_text())
        with open(path.parent / "run" / "all_results.json") as handle:
            assert json.load(handle)["metric"] == data["metric"]
        assert data["sparsity"]["achieved"] == pytest.approx(data["cell"]["sparsity"], abs=0.01)
        assert data["model"] == model and data["complete"] is True
        cells[(data["cell"]["method"], data["cell"]["sparsity"])] = data["metric"]
    assert set(cells) == {("dense", 0.0), ("omp_before", 0.3), ("omp_before", 0.6), ("random_before", 0.3),
                          ("random_before", 0.6)}

    assert cli.main(["report", str(out)]) == 0
    with open(out / "report" / "summary.csv", newline="") as handle:
        table = {(row["method"], float(row["sparsity"])): float(row["mean"]) for row in csv.DictReader(handle)}
    assert table == cells
    png = out / "report" / "csqa.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000


def test_lth_chain_and_shared_dense_run_through_run_glue_like(tmp_path):
    """The real entry script: the LTH chain records its dense round and its ticket from one run, OMP (After)
    starts from the chain's round 0, and that dense round scores what a plain dense run does."""
    rows = csqa_rows(6)
    train = write_jsonl(str(tmp_path / "train.jsonl"), rows)
    dev = write_jsonl(str(tmp_path / "dev.jsonl"), rows[:4])
    model = tiny_roberta_dir(str(tmp_path / "roberta"), ["Q: Where is money kept? A: bank library store mall park"])

    def sweep(out, methods):
        return cli.main(["run", "--tasks", "csqa", "--methods", methods, "--sparsities", "0.2", "--seeds", "1",
                         "--model", model, "--output", str(out),
                         "--task-args", f"csqa=--train_file {train} --validation_file {dev}", "--", *TRAINING])

    out = tmp_path / "results"
    assert sweep(out, "lth,omp_after") == 0
    chain = out / "csqa/lth/sparsity-0.2/seed-1/run"
    round0 = json.loads((chain / "round-0" / "all_results.json").read_text())
    assert round0["round"] == 0 and round0["sparsity"]["achieved"] == 0.0
    dense = json.loads((out / "csqa/dense/sparsity-0/seed-1/result.json").read_text())
    assert dense["metric"] == round0["metric"] and dense["shared_run"]["round"] == 0
    ticket = json.loads((out / "csqa/lth/sparsity-0.2/seed-1/result.json").read_text())
    assert ticket["sparsity"]["achieved"] == pytest.approx(0.2, abs=0.005)
    after = json.loads((out / "csqa/omp_after/sparsity-0.2/seed-1/result.json").read_text())
    assert after["sparsity_config"]["skip_dense_phase"] is True and after["model"] == model
    assert after["sparsity"]["achieved"] == pytest.approx(0.2, abs=0.005)
    assert "--skip_dense_phase" in after["command"] and str(chain / "round-0") in after["command"]

    plain = tmp_path / "plain"
    assert sweep(plain, "dense") == 0
    alone = json.loads((plain / "csqa/dense/sparsity-0/seed-1/result.json").read_text())
    assert alone["metric"] == dense["metric"] and alone["metrics"]["eval_loss"] == dense["metrics"]["eval_loss"]
