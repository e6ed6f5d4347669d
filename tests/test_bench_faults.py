"""Regression tests for issue 15 section 4 (poor messages) in smc-bench: the child dies with its parent, a
cell folder is locked against a second run (never by a dead one), and a resumed cell's cost sums all attempts."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from smc_hf.bench import Launcher, build_grid, parse_methods, run_sweep
from smc_hf.bench.lock import LOCK_FILE, folder_lock
from smc_hf.bench.sweep import cell_dir
from tests.test_bench import FAKE_ENTRY, ROOT, bench_process, fake  # noqa: F401  (fixture)

DRIVER = textwrap.dedent("""
    import sys
    from smc_hf.bench.launch import run_child
    child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    sys.exit(run_child([sys.executable, "-c", child, sys.argv[1]]))
""")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killing_only_the_parent_stops_its_child(tmp_path, sig):
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", DRIVER, str(pid_file)], env=dict(os.environ, PYTHONPATH=ROOT))
    assert _wait(lambda: pid_file.exists() and pid_file.read_text())
    child = int(pid_file.read_text())
    assert _alive(child)
    parent.send_signal(sig)
    assert parent.wait(30) == -sig
    assert _wait(lambda: not _alive(child)), f"child {child} outlived its parent killed by {sig!r}"


def test_a_locked_cell_is_refused_and_a_dead_holder_never_blocks(fake, tmp_path):
    entry, calls = fake
    out = str(tmp_path / "results")
    launcher = Launcher(entry, "tiny")
    (cell,) = build_grid(["toy"], parse_methods("omp_before"), [0.5], [1], dense=False)
    folder = cell_dir(out, cell)
    with folder_lock(folder, "test"):
        summary = run_sweep([cell], out, launcher, log=lambda m: None)
    ((failed, error),) = summary.failed
    assert failed == cell and f"is being run by another smc-bench process (pid {os.getpid()}" in error
    assert os.path.join(folder, LOCK_FILE) in error and calls() == []
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from smc_hf.bench.lock import folder_lock\n"
         "with folder_lock(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(120)", folder],
        env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert not run_sweep([cell], out, launcher, log=lambda m: None).ok
    holder.kill()
    holder.wait()
    assert run_sweep([cell], out, launcher, log=lambda m: None).ok
    assert len(calls()) == 1


def test_a_resumed_cell_records_the_runtime_of_every_attempt(fake, tmp_path):
    entry, calls = fake
    out = tmp_path / "results"
    env = dict(os.environ, FAKE_KILL_AT="random_before/0.25", PYTHONPATH=ROOT)
    killed = bench_process(entry, out, env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = bench_process(entry, out, env)
    assert resumed.returncode == 0, resumed.stderr
    folder = out / "toy/random_before/sparsity-0.25/seed-1"
    raw = json.loads((folder / "result.json").read_text())
    attempts = json.loads((folder / "attempts.json").read_text())["attempts"]
    assert [a["killed"] for a in attempts] == [True, False] and raw["attempts"] == 2
    assert raw["train_runtime_last_attempt"] == 0.01
    assert raw["train_runtime"] == pytest.approx(attempts[0]["wall_s"] + 0.01)
    assert raw["wall_time_s"] == pytest.approx(attempts[0]["wall_s"] + attempts[1]["wall_s"])
    assert raw["wall_time_last_attempt_s"] == attempts[1]["wall_s"]
    once = json.loads((out / "toy/omp_before/sparsity-0.25/seed-1/result.json").read_text())
    assert once["attempts"] == 1 and once["train_runtime"] == once["train_runtime_last_attempt"] == 0.01
