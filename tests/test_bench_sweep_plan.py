"""smc-bench does each fine-tuning once: one LTH chain per task/seed/fold, one shared dense run, folds pooled
by counts, cores split between concurrent runs, and a dry run that lists it all (stand-in entry script)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from smc_hf.bench import Launcher, build_grid, build_plan, parse_folds, parse_methods, read_result, run_sweep
from smc_hf.bench.sweep import slot_env, thread_slots
from smc_hf.cli import bench as cli
from tests.test_bench import ROOT, make_fake, read_rounds


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return make_fake(tmp_path, monkeypatch)


@pytest.fixture
def rounds(tmp_path):
    return lambda: read_rounds(tmp_path)


def argv(entry, out, methods, sparsities, *extra, tasks="toy", seeds="1"):
    return ["run", "--tasks", tasks, "--methods", methods, "--sparsities", sparsities, "--seeds", seeds,
            "--model", "tiny", "--output", str(out), "--entry", entry, *extra, "--", "--max_steps", "2"]


def results(out):
    return {(d["cell"]["method"], d["cell"]["sparsity"], d["cell"]["seed"], d["cell"].get("fold")): d
            for d in (json.loads(p.read_text()) for p in out.rglob("result.json"))}


def test_a_two_sparsity_lth_sweep_runs_three_fine_tunings_in_one_chain(fake, rounds, tmp_path):
    entry, calls = fake
    out = tmp_path / "results"
    assert cli.main(argv(entry, out, "lth", "0.2,0.36")) == 0
    # one process: dense round 0 (the dense row) and two pruning rounds; not 1 + 2 + 3 fine-tunings
    assert [(c[1], c[2]) for c in calls()] == [("lth", 0.36)]
    assert [r[5] for r in rounds()] == [0, 1, 2]
    got = results(out)
    assert set(got) == {("dense", 0.0, 1, None), ("lth", 0.2, 1, None), ("lth", 0.36, 1, None)}
    chain = out / "toy/lth/sparsity-0.36/seed-1/run"
    for (method, sparsity, _, _), data in got.items():
        round_idx = {0.0: 0, 0.2: 1, 0.36: 2}[sparsity]
        source = chain / (f"round-{round_idx}" if round_idx < 2 else "") / "all_results.json"
        assert data["metric"] == json.loads(source.read_text())["metric"]
        assert data["shared_run"] == {"run": "toy/lth/sparsity-0.36/seed-1/run", "round": round_idx}
    assert got[("lth", 0.2, 1, None)]["metric"] == 80.0 - 45.0 * 0.2 ** 2 + 0.25
    # a later sweep with the same grid runs nothing
    assert cli.main(argv(entry, out, "lth", "0.2,0.36")) == 0 and len(calls()) == 1


def test_a_killed_chain_resumes_in_its_round_and_ends_as_an_uninterrupted_one(fake, rounds, tmp_path, capsys):
    entry, calls = fake
    clean = tmp_path / "clean"
    assert cli.main(argv(entry, clean, "lth", "0.2,0.36,0.488")) == 0
    n_rounds = len(rounds())
    assert n_rounds == 4

    out = tmp_path / "results"
    env = dict(os.environ, FAKE_KILL_AT="lth/round-2", PYTHONPATH=ROOT)
    killed = subprocess.run([sys.executable, "-m", "smc_hf.cli.bench", *argv(entry, out, "lth", "0.2,0.36,0.488")],
                            env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [r[5] for r in rounds()[n_rounds:]] == [0, 1]  # killed at the start of round 2
    capsys.readouterr()
    assert cli.main(argv(entry, out, "lth", "0.2,0.36,0.488")) == 0
    assert "(2 fine-tunings in 1 runs)" in capsys.readouterr().err  # the saved rounds 0-1 are not counted
    assert [r[5] for r in rounds()[n_rounds + 2:]] == [2, 3]  # resumed in round 2, rounds 0-1 not redone
    assert calls()[-1][4] == ["--max_steps", "2", "--resume_from_checkpoint", "True"]
    strip = ("wall_time_s", "command", "finished", "argv", "versions")
    a, b = results(clean), results(out)
    assert set(a) == set(b) and len(a) == 4
    for key in a:
        assert {k: v for k, v in a[key].items() if k not in strip} == {k: v for k, v in b[key].items() if k not in strip}


def test_after_training_cells_start_from_one_shared_dense_run(fake, rounds, tmp_path):
    entry, calls = fake
    out = tmp_path / "results"
    assert cli.main(argv(entry, out, "omp_after,random_after,gmp", "0.2,0.5", seeds="1,2")) == 0
    fine_tunings = rounds()
    dense = [r for r in fine_tunings if r[1] == "dense" or (r[1] in ("omp_after", "random_after") and r[5] == 0
                                                           and not _skipped(calls(), r))]
    assert sorted((r[1], r[3]) for r in dense) == [("dense", 1), ("dense", 2)]  # one dense fine-tuning per seed
    assert len(fine_tunings) == 2 + 2 * 2 * 2 + 2 * 2  # dense + after cells (one round each) + gmp
    for call in calls():
        if call[1] in ("omp_after", "random_after"):
            assert call[8] is True and call[7] == str(out / f"toy/dense/sparsity-0/seed-{call[3]}/run")
    data = results(out)[("omp_after", 0.5, 2, None)]
    assert data["shared_run"] == {"dense_run": os.path.join("toy", "dense", "sparsity-0", "seed-2", "run")}
    assert data["model"] == "tiny" and data["sparsity_config"]["skip_dense_phase"] is True


def _skipped(calls, fine_tuning):
    return any(c[1] == fine_tuning[1] and c[2] == fine_tuning[2] and c[3] == fine_tuning[3] and c[8] for c in calls)


def test_lth_chain_round_zero_is_the_dense_run_of_the_after_training_cells(fake, rounds, tmp_path):
    entry, calls = fake
    out = tmp_path / "results"
    assert cli.main(argv(entry, out, "lth,omp_after", "0.2,0.36")) == 0
    assert len(rounds()) == 3 + 2  # the chain (dense round + 2) and two after-training cells, nothing else
    assert [c[1] for c in calls()] == ["lth", "omp_after", "omp_after"]
    assert {c[7] for c in calls()[1:]} == {str(out / "toy/lth/sparsity-0.36/seed-1/run/round-0")}


def test_folds_are_a_grid_axis_and_the_report_pools_their_counts(fake, tmp_path):
    entry, calls = fake
    assert parse_folds("default", ["mawps", "csqa"]) == {"mawps": (0, 1, 2, 3, 4), "csqa": (None,)}
    assert parse_folds("0,2", ["asdiv-a"]) == {"asdiv-a": (0, 2)}
    with pytest.raises(ValueError, match="none of the tasks"):
        parse_folds("1", ["csqa"])
    out = tmp_path / "results"
    assert cli.main(argv(entry, out, "omp_before", "0.5", tasks="mawps", seeds="1,2")) == 0
    assert sorted({c[6] for c in calls()}) == [0, 1, 2, 3, 4] and len(calls()) == 2 * 2 * 5
    assert (out / "mawps/omp_before/sparsity-0.5/seed-1/fold-3/result.json").exists()
    assert cli.main(["report", str(out)]) == 0
    with open(out / "report" / "summary.csv", newline="") as handle:
        rows = {(r["method"], float(r["sparsity"])): r for r in csv.DictReader(handle)}
    for method, sparsity, drop in (("dense", 0.0, 0.0), ("omp_before", 0.5, 30.0)):
        per_seed = []
        for seed in (1, 2):  # the stand-in's fold f: 100 + 10 f examples, round(metric% of them) - f correct
            metric = 80.0 - drop * sparsity ** 2 + 0.25 * seed
            correct = sum(round(metric / 100 * (100 + 10 * f)) - f for f in range(5))
            per_seed.append(100.0 * correct / sum(100 + 10 * f for f in range(5)))
        row = rows[(method, sparsity)]
        assert float(row["mean"]) == pytest.approx(sum(per_seed) / 2, abs=1e-12)
        assert row["n"] == "2" and row["values"] == " ".join(map(repr, per_seed))
    assert "folds 0,1,2,3,4 pooled" in (out / "report" / "summary.md").read_text()
    # a fold without counts is named, not averaged in
    path = out / "mawps/dense/sparsity-0/seed-1/fold-4/result.json"
    data = json.loads(path.read_text())
    del data["metrics"]["eval_answer_correct"]
    path.write_text(json.dumps(data))
    assert cli.main(["report", str(out)]) == 0
    md = (out / "report" / "summary.md").read_text()
    assert "mawps dense s=0 seed=1: folds not pooled" in md and "eval_answer_correct" in md


def test_jobs_give_each_run_its_own_share_of_the_cores(fake, tmp_path):
    entry, calls = fake
    assert thread_slots(1) == [None]
    assert thread_slots(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="more than the 2 cores"):
        thread_slots(3, [0, 1])
    env = slot_env([2, 3])
    assert env["OMP_NUM_THREADS"] == "2" and env["MKL_NUM_THREADS"] == "2"
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core available: --jobs 2 cannot be run here")
    out = tmp_path / "results"
    cells = build_grid(["toy"], parse_methods("omp_before,gmp"), [0.3, 0.6], [1])
    assert run_sweep(cells, str(out), Launcher(entry, "tiny"), log=lambda m: None, jobs=2).ok
    per = len(cores) // 2
    seen = [tuple(c[5]["cores"]) for c in calls()]
    assert {c[5]["omp"] for c in calls()} == {str(per)} and all(len(s) == per for s in seen)
    assert set(seen) <= {tuple(cores[:per]), tuple(cores[per:2 * per])}
    assert all(read_result(str(out / c.relpath / "result.json"), str(out)) for c in cells)


def test_dry_run_lists_the_fine_tunings_and_estimates_their_time(fake, tmp_path, capsys):
    entry, calls = fake
    out = tmp_path / "results"
    capsys.readouterr()
    assert cli.main(argv(entry, out, "lth,omp_after,gmp", "0.2,0.36", "--dry-run", "--step-seconds", "0.5")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert calls() == []  # nothing trained
    assert lines[0].startswith("chain         toy seed=1 lth to 0.36: 3 fine-tunings (round 0 is the shared dense run)")
    assert sum(line.startswith("cell ") for line in lines) == 4
    assert "toy omp_after s=0.2 seed=1: 1 fine-tuning from the shared dense run" in lines[1]
    assert "7 fine-tunings in 5 runs (0 runs already done)" in lines
    assert lines[-1].startswith("estimated time: 7 s (0.5 s/step (--step-seconds)")  # 7 x 2 steps x 0.5 s
    assert lines[0].endswith("round 1: 0.2, round 2: 0.36")  # the last round by its number
    plan = build_plan(build_grid(["toy"], parse_methods("lth,omp_after,gmp"), [0.2, 0.36], [1]))
    assert [u.kind for u in plan] == ["chain", "cell", "cell", "cell", "cell"] and sum(u.fine_tunings for u in plan) == 7

    # a killed chain that saved its dense round: that fine-tuning is not counted (nor timed) again
    saved = out / "toy/lth/sparsity-0.36/seed-1/run/round-0"
    saved.mkdir(parents=True)
    (saved / "sparsity_round.json").write_text("{}")
    assert cli.main(argv(entry, out, "lth,omp_after,gmp", "0.2,0.36", "--dry-run", "--step-seconds", "0.5")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "3 fine-tunings (1 already saved)" in lines[0]
    assert "6 fine-tunings in 5 runs (0 runs already done)" in lines and lines[-1].startswith("estimated time: 6 s")
    shutil.rmtree(out / "toy")

    assert cli.main(argv(entry, out, "gmp", "0.5", "--dry-run", "--probe-steps", "1")) == 0
    text = capsys.readouterr().out
    assert [c[1] for c in calls()] == ["dense", "dense"]  # the probe: 1 and 2 steps of a dense run
    assert calls()[0][4][-8:-6] == ["--max_steps", "1"] and calls()[1][4][-8:-6] == ["--max_steps", "2"]
    assert "estimated time:" in text and "probe of 1 and 2 steps" in text and not (out / ".probe").exists()
