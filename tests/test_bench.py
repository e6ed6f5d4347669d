"""smc-bench with a stand-in entry script (no training): grid, resume after a kill, malformed results, tables."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap

import pytest

from smc_hf.bench import (
    PAPER_SPARSITIES,
    Launcher,
    MethodSpec,
    ResultError,
    aggregate,
    build_grid,
    markdown,
    parse_methods,
    parse_seeds,
    parse_sparsities,
    read_result,
    run_sweep,
    scan_results,
    within_dense,
    write_report,
)
from smc_hf.bench.results import CellResult, read_run_results
from smc_hf.io.atomic import write_json
from smc_hf.bench.sweep import cell_statuses, pending_cells
from smc_hf.cli import bench as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Follows run_glue_like.py's contract, multi-round methods included (LTH writes round-K/all_results.json and
# round-K/sparsity_round.json as each round but the last ends; --resume_from_checkpoint True continues after the
# last finished round). Logs each process to FAKE_LOG and each fine-tuning (round) to FAKE_LOG.rounds; on
# FAKE_KILL_AT="method/sparsity" kills the sweep (its parent) once, mid-cell, and on "lth/round-K" at the start
# of round K; on FAKE_FAIL="method" exits with an error. Cross-validated runs record eval_answer_correct/eval_examples.
FAKE_ENTRY = textwrap.dedent("""
    import argparse, json, math, os, signal, sys
    p = argparse.ArgumentParser()
    for k in ("--task", "--sparsity_method", "--output_dir", "--model_name_or_path", "--rigl_init"):
        p.add_argument(k)
    p.add_argument("--sparsity", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--fold", type=int)
    p.add_argument("--skip_dense_phase", default="False")
    a, rest = p.parse_known_args()
    skip = a.skip_dense_phase == "True"
    threads = {"omp": os.environ.get("OMP_NUM_THREADS"), "cores": sorted(os.sched_getaffinity(0))}
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(json.dumps([a.task, a.sparsity_method, a.sparsity, a.seed, rest, threads,
                            a.fold, a.model_name_or_path, skip]) + "\\n")
    os.makedirs(a.output_dir, exist_ok=True)
    if os.environ.get("FAKE_FAIL") == a.sparsity_method:
        print("Traceback: something broke in the run", file=sys.stderr)
        sys.exit(1)

    def kill_once(where):
        if os.environ.get("FAKE_KILL_AT") == where:
            marker = os.environ["FAKE_LOG"] + ".killed"
            if not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getppid(), signal.SIGKILL)
                sys.exit(3)

    kill_once(f"{a.sparsity_method}/{a.sparsity:g}")
    if a.sparsity_method == "lth":
        rounds = 1 + round(math.log(1 - a.sparsity) / math.log(0.8))
    elif a.sparsity_method in ("omp_after", "random_after"):
        rounds = 1 if skip else 2
    else:
        rounds = 1
    first = 0
    if "--resume_from_checkpoint" in rest:
        while first < rounds - 1 and os.path.exists(os.path.join(a.output_dir, f"round-{first}", "sparsity_round.json")):
            first += 1
    drop = {"dense": 0.0, "omp_before": 30.0, "random_before": 60.0}.get(a.sparsity_method, 45.0)
    for k in range(first, rounds):
        kill_once(f"{a.sparsity_method}/round-{k}")
        with open(os.environ["FAKE_LOG"] + ".rounds", "a") as f:
            f.write(json.dumps([a.task, a.sparsity_method, a.sparsity, a.seed, a.fold, k]) + "\\n")
        last = k == rounds - 1
        s = a.sparsity if last else (1 - 0.8 ** k if a.sparsity_method == "lth" else 0.0)
        metric = 80.0 - drop * s ** 2 + 0.25 * a.seed
        metrics = {"eval_accuracy": metric, "eval_high_accuracy": metric - 1.0}
        if a.fold is not None:
            total = 100 + 10 * a.fold
            correct = round(metric / 100 * total) - a.fold
            metric = 100.0 * correct / total
            metrics = {"eval_accuracy": metric, "eval_answer_correct": correct, "eval_examples": total}
        out = a.output_dir if last else os.path.join(a.output_dir, f"round-{k}")
        os.makedirs(out, exist_ok=True)
        results = {"task": a.task, "metric_name": "accuracy", "metric": metric, "metrics": metrics,
                   "sparsity": {"target": s, "achieved": s, "selected_numel": 64, "zeros": round(64 * s),
                                "modules": {"a.weight": {"numel": 48, "zeros": round(48 * s)},
                                            "b.weight": {"numel": 16, "zeros": round(64 * s) - round(48 * s)}}},
                   "sparsity_config": {"method": a.sparsity_method, "sparsity": a.sparsity,
                                       "rigl_init": a.rigl_init or "omp", "skip_dense_phase": skip},
                   "model_name_or_path": a.model_name_or_path, "seed": a.seed, "train_runtime": 0.01}
        if not last:
            results["round"] = k
        with open(os.path.join(out, "all_results.json"), "w") as f:
            json.dump(results, f)
        if not last:
            with open(os.path.join(out, "sparsity_round.json"), "w") as f:
                json.dump({"round": k}, f)
""")


def make_fake(tmp_path, monkeypatch):
    """The stand-in entry script, and a reader of the processes it ran."""
    entry = tmp_path / "fake_entry.py"
    entry.write_text(FAKE_ENTRY)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return str(entry), calls


def read_rounds(tmp_path):
    """Every fine-tuning the stand-in did: [task, method, sparsity, seed, fold, round]."""
    log = tmp_path / "calls.jsonl.rounds"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return make_fake(tmp_path, monkeypatch)


def sweep_argv(entry, out, *extra):
    return ["run", "--tasks", "toy", "--methods", "omp_before,random_before", "--sparsities", "0.25,0.5",
            "--seeds", "1", "--model", "tiny", "--output", str(out), "--entry", entry, *extra,
            "--", "--max_steps", "2"]


def bench_process(entry, out, env):
    """`smc-bench run` of the stand-in sweep as its own process (so it can be SIGKILLed), output captured."""
    return subprocess.run([sys.executable, "-m", "smc_hf.cli.bench", *sweep_argv(entry, out)], env=env,
                          capture_output=True, text=True)


def test_grid_parsing_and_validation():
    assert parse_sparsities("paper") == list(PAPER_SPARSITIES)
    assert PAPER_SPARSITIES == (0.2, 0.36, 0.488, 0.59, 0.672, 0.738, 0.791, 0.8325, 0.866, 0.893)
    assert parse_sparsities("0.5, paper, 0.2") == [0.5] + list(PAPER_SPARSITIES)
    assert parse_seeds("3,1,3") == [3, 1]
    assert [m.spec for m in parse_methods("omp,omp_before,gmp,random_after")] == ["omp_before", "gmp", "random_after"]
    for bad in ("1.0", "0", "-0.1", "abc", "nan", ""):
        with pytest.raises(ValueError):
            parse_sparsities(bad)
    with pytest.raises(ValueError, match="unknown sparsity method"):
        parse_methods("omp_after,nope")
    with pytest.raises(ValueError, match="only rigl takes an initial mask"):
        MethodSpec.parse("gmp:snip")
    with pytest.raises(ValueError, match="seeds must be integers"):
        parse_seeds("1,x")

    cells = build_grid(["a", "b"], parse_methods("omp_after,gmp"), [0.2, 0.5], [1, 2])
    assert len(cells) == 2 * (2 * 2 * 2 + 2)  # per task: 2 methods x 2 sparsities x 2 seeds, plus dense x 2 seeds
    dense = [c for c in cells if c.method.spec == "dense"]
    assert len(dense) == 4 and {c.sparsity for c in dense} == {0.0}
    assert len({c.relpath for c in cells}) == len(cells)
    assert {c.training_runs for c in cells if c.method.spec == "omp_after"} == {2}  # dense round + re-training
    assert {c.training_runs for c in cells if c.method.spec == "gmp"} == {1}
    assert len(build_grid(["a"], parse_methods("gmp"), [0.2], [1], dense=False)) == 1


def test_method_specs_name_rigl_inits_apart_with_the_paper_legend():
    specs = parse_methods("dense,lth,omp_after,random_after,gmp,snip,rigl:snip,random,rigl:random,omp,rigl,obert")
    assert [m.legend for m in specs] == [
        "Dense", "LTH (After)", "OMP (After)", "Random (After)", "GMP (During)", "SNIP (Before)", "SNIP+RIGL (Before)",
        "Random (Before)", "Random+RIGL (Before)", "OMP (Before)", "OMP+RIGL (Before)", "oBERT (After)"]
    assert parse_methods("rigl,rigl:omp") == [MethodSpec("rigl", "omp")]  # plain rigl starts from OMP
    snip_rigl = MethodSpec.parse("rigl:snip")
    assert snip_rigl.entry_args(0.5) == ["--sparsity_method", "rigl", "--sparsity", "0.5", "--rigl_init", "snip"]
    cells = build_grid(["t"], parse_methods("rigl:snip,rigl:random,lth"), [0.2, 0.893], [1], dense=False)
    assert [c.relpath for c in cells[:2]] == [os.path.join("t", "rigl-snip", f"sparsity-{s}", "seed-1")
                                              for s in ("0.2", "0.893")]
    assert [c.training_runs for c in cells if c.method.method == "lth"] == [2, 11]  # dense round + 20% rounds
    with pytest.raises(ValueError, match="omp, snip or random mask"):
        MethodSpec.parse("rigl:magnitude")


def test_sweep_resumes_after_being_killed_and_report_equals_cell_files(fake, tmp_path):
    entry, calls = fake
    out = tmp_path / "results"
    env = dict(os.environ, FAKE_KILL_AT="random_before/0.25", PYTHONPATH=ROOT)
    killed = bench_process(entry, out, env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before_kill = [tuple(c[1:3]) for c in calls()]
    assert before_kill == [("dense", 0.0), ("omp_before", 0.25), ("omp_before", 0.5), ("random_before", 0.25)]
    assert calls()[0][4] == ["--max_steps", "2"]  # arguments after -- reach every run
    done_files = sorted(str(p) for p in out.rglob("result.json"))
    assert len(done_files) == 3
    snapshot = {p: open(p).read() for p in done_files}
    assert not (out / "toy/random_before/sparsity-0.25/seed-1/result.json").exists()

    resumed = bench_process(entry, out, env)
    assert resumed.returncode == 0, resumed.stderr
    assert "5 cells: 3 done, 2 to run" in resumed.stderr
    assert [tuple(c[1:3]) for c in calls()[4:]] == [("random_before", 0.25), ("random_before", 0.5)]
    assert {p: open(p).read() for p in done_files} == snapshot  # finished cells untouched

    result = read_result(str(out / "toy/random_before/sparsity-0.25/seed-1/result.json"), str(out))
    assert result.metric == 80.0 - 60.0 * 0.25 ** 2 + 0.25 and result.model == "tiny"
    raw = json.loads((out / "toy/random_before/sparsity-0.25/seed-1/result.json").read_text())
    assert raw["complete"] is True and list(raw)[-1] == "complete"
    assert {"torch", "transformers", "smc_hf", "python"} <= set(raw["versions"])
    assert raw["wall_time_s"] > 0 and raw["sparsity_config"]["method"] == "random_before"

    assert cli.main(["report", str(out)]) == 0
    cell_metrics = {}
    for path in out.rglob("result.json"):
        data = json.loads(path.read_text())
        cell_metrics[(data["cell"]["method"], data["cell"]["sparsity"])] = data["metric"]
    with open(out / "report" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(cell_metrics) == 5
    for row in rows:
        assert float(row["mean"]) == cell_metrics[(row["method"], float(row["sparsity"]))]
        assert row["n"] == "1" and row["std"] == "" and row["seeds"] == "1"
    md = (out / "report" / "summary.md").read_text()
    assert "| Dense | 80.25 |" in md
    low, high = cell_metrics[("omp_before", 0.25)], cell_metrics[("omp_before", 0.5)]
    assert f"| OMP (Before) |  | {low:.2f} | {high:.2f} |" in md
    png = (out / "report" / "toy.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_malformed_result_is_reported_and_redone(fake, tmp_path):
    entry, calls = fake
    out = tmp_path / "results"
    cells = build_grid(["toy"], parse_methods("omp_before"), [0.25, 0.5], [1])
    launcher = Launcher(entry, "tiny")
    assert run_sweep(cells, str(out), launcher, log=lambda m: None).ok
    broken = out / "toy/omp_before/sparsity-0.5/seed-1/result.json"
    text = broken.read_text()
    broken.write_text(text[: len(text) // 2])  # a file cut short
    partial = out / "toy/omp_before/sparsity-0.25/seed-1/result.json"
    data = json.loads(partial.read_text())
    del data["complete"]
    partial.write_text(json.dumps(data))

    results, problems = scan_results(str(out))
    assert len(results) == 1 and len(problems) == 2  # the report counts neither
    assert any("malformed or partial JSON" in p and "sparsity-0.5" in p for p in problems)
    assert any("no completion marker" in p and "sparsity-0.25" in p for p in problems)
    report = write_report(str(out))
    assert report.cells == 1 and "Result files not counted" in open(report.markdown).read()

    messages = []
    n_calls = len(calls())
    summary = run_sweep(cells, str(out), launcher, log=messages.append)
    assert len(summary.redone) == 2 and len(summary.completed) == 2 and len(summary.skipped) == 1
    assert any("redoing toy omp_before s=0.5" in m for m in messages)
    assert [tuple(c[1:3]) for c in calls()[n_calls:]] == [("omp_before", 0.25), ("omp_before", 0.5)]
    assert (broken.parent / "result.json.rejected").read_text() == text[: len(text) // 2]
    assert read_result(str(broken), str(out)).metric == 80.0 - 30.0 * 0.25 + 0.25
    assert pending_cells(cells, str(out), "tiny") == []


def test_failed_cell_is_reported_with_its_log_and_not_recorded(fake, tmp_path, monkeypatch, capsys):
    entry, _ = fake
    monkeypatch.setenv("FAKE_FAIL", "random_before")
    out = tmp_path / "results"
    assert cli.main(sweep_argv(entry, out)) == 1
    err = capsys.readouterr().err
    assert "FAILED toy random_before s=0.25" in err and "something broke in the run" in err
    assert "3 run, 0 skipped (already done), 0 redone, 2 failed" in err
    assert not list((out / "toy" / "random_before").rglob("result.json"))
    assert "something broke" in (out / "toy/random_before/sparsity-0.5/seed-1/run.log").read_text()


def test_print_commands_lists_pending_cells_as_runnable_lines(fake, tmp_path, capsys):
    entry, calls = fake
    out = tmp_path / "results"
    assert cli.main(sweep_argv(entry, out, "--task-args", "toy=--data_dir 'a b'")) == 0
    (out / "toy/omp_before/sparsity-0.5/seed-1/result.json").unlink()
    (out / "toy/dense/sparsity-0/seed-1/result.json").unlink()
    capsys.readouterr()
    n_calls = len(calls())
    assert cli.main(sweep_argv(entry, out, "--task-args", "toy=--data_dir 'a b'", "--print-commands")) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(lines) == 2 and len(calls()) == n_calls  # printing runs nothing
    for line in lines:
        argv = shlex.split(line)
        assert argv[:2] == ["smc-bench", "run"] and "--no-dense" in argv
        assert cli.main(argv[1:]) == 0
    assert "--sparsities" not in lines[0] and f"--output {out}" in lines[0]  # the dense cell; absolute folder
    ran = calls()[n_calls:]
    assert [tuple(c[1:3]) for c in ran] == [("dense", 0.0), ("omp_before", 0.5)]
    assert all(c[4] == ["--data_dir", "a b", "--max_steps", "2"] for c in ran)
    assert pending_cells(build_grid(["toy"], parse_methods("omp_before,random_before"), [0.25, 0.5], [1]),
                         str(out), "tiny") == []


def test_accelerate_launch_command(fake, tmp_path):
    entry, _ = fake
    cell = build_grid(["toy"], parse_methods("rigl:snip"), [0.5], [2], dense=False)[0]
    launcher = Launcher(entry, "m", ["--max_steps", "2"], {"toy": ["--fold", "1"]}, accelerate=True,
                        accelerate_args=["--num_processes", "2"])
    assert launcher.command(cell, "out/run", resume=True) == [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", entry, "--task", "toy",
        "--model_name_or_path", "m", "--sparsity_method", "rigl", "--sparsity", "0.5", "--rigl_init", "snip",
        "--seed", "2", "--output_dir", "out/run", "--fold", "1", "--max_steps", "2", "--resume_from_checkpoint", "True"]
    line = shlex.split(launcher.cell_line(cell, "res"))
    assert line[line.index("--accelerate-args") + 1] == "--num_processes 2" and line[-3:] == ["--", "--max_steps", "2"]
    own, rest = cli._split_passthrough(["run", "--accelerate-args", "--cpu", "--task-args", "toy=--fold 1", "--",
                                        "--accelerate-args", "x"])
    opts = cli.build_parser().parse_args(own + ["--tasks", "toy", "--methods", "gmp", "--output", "o"])
    assert opts.accelerate_args == "--cpu" and opts.task_args == ["toy=--fold 1"] and rest == ["--accelerate-args", "x"]


def test_bad_input_fails_before_any_run(fake, tmp_path, capsys):
    entry, calls = fake
    out = tmp_path / "results"
    assert cli.main(["run", "--tasks", "toy", "--methods", "omp_before", "--sparsities", "0.5,1.5",
                     "--output", str(out), "--entry", entry]) == 2
    assert cli.main(["run", "--tasks", "toy", "--methods", "omp_before", "--output", str(out),
                     "--entry", str(tmp_path / "missing.py")]) == 2
    assert cli.main(["run", "--tasks", "toy", "--methods", "omp_before", "--output", str(out), "--entry", entry,
                     "--task-args", "other=--x 1"]) == 2
    assert cli.main(["run", "--tasks", "nosuchtask", "--methods", "omp_before", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "must be in (0, 1)" in err and "not found" in err and "not in --tasks" in err
    assert "unknown task(s) nosuchtask" in err
    assert calls() == []
    # a results folder from another model is refused rather than mixed
    assert cli.main(sweep_argv(entry, out)) == 0
    with pytest.raises(ValueError, match="produced with model 'tiny'"):
        cell_statuses(build_grid(["toy"], parse_methods("omp_before"), [0.25], [1]), str(out), "other-model")


def test_result_files_are_checked_field_by_field(tmp_path):
    cell = build_grid(["toy"], parse_methods("omp_before"), [0.5], [1], dense=False)[0]
    run = {"task": "toy", "metric_name": "accuracy", "metric": 50.0, "sparsity": {"achieved": 0.5},
           "sparsity_config": {"method": "omp_before", "sparsity": 0.5}}
    path = str(tmp_path / "all_results.json")
    for change, message in [({"task": "other"}, "task is 'other'"), ({"metric": float("nan")}, "not a finite"),
                            ({"sparsity_config": {"method": "gmp", "sparsity": 0.5}}, "ran method 'gmp'"),
                            ({"sparsity_config": {"method": "omp_before", "sparsity": 0.4}}, "ran at sparsity 0.4"),
                            ({"metric": "50"}, "wrong type")]:
        write_json(path, {**run, **change}, indent=2)
        with pytest.raises(ResultError, match=message):
            read_run_results(path, cell)
    write_json(path, run, indent=2)
    assert read_run_results(path, cell)["metric"] == 50.0
    with open(path, "w") as handle:
        handle.write("[1, 2]")
    with pytest.raises(ResultError, match="expected a JSON object"):
        read_run_results(path, cell)

    from smc_hf.bench.results import build_result

    misplaced = tmp_path / "results" / "toy" / "gmp" / "sparsity-0.5" / "seed-1"
    misplaced.mkdir(parents=True)
    write_json(str(misplaced / "result.json"), build_result(cell, "m", run, ["cmd"], 1.0), indent=2)
    with pytest.raises(ResultError, match="whose folder is toy/omp_before/sparsity-0.5/seed-1"):
        read_result(str(misplaced / "result.json"), str(tmp_path / "results"))
    assert read_result(str(misplaced / "result.json")).metric == 50.0


def _result(method, sparsity, seed, metric, task="t", metric_name="accuracy"):
    return CellResult(task, method, sparsity, seed, "m", metric_name, metric, sparsity, 1.0, f"{method}/{seed}")


def test_aggregation_and_within_dense():
    results = [_result("dense", 0.0, s, v) for s, v in [(1, 80.0), (2, 82.0), (3, 81.0)]]
    # omp_after: within 1 point (>= 80.0) at 0.2 and 0.36, not at 0.488, back within at 0.59: "stays" stops at 0.36
    for sparsity, values in [(0.2, [81.0, 80.0, 79.5]), (0.36, [80.0, 80.0, 80.0]), (0.488, [79.0, 79.0, 79.5]),
                             (0.59, [81.0, 81.0, 81.0])]:
        results += [_result("omp_after", sparsity, seed, v) for seed, v in enumerate(values, 1)]
    results += [_result("random_before", 0.2, 1, 60.0), _result("random_before", 0.36, 1, 90.0)]
    groups = aggregate(results)
    assert [(g.method, g.sparsity) for g in groups][:2] == [("dense", 0.0), ("omp_after", 0.2)]
    dense = groups[0]
    assert dense.mean == 81.0 and dense.std == 1.0 and dense.seeds == (1, 2, 3)
    first = groups[1]
    assert first.mean == pytest.approx((81.0 + 80.0 + 79.5) / 3) and first.n == 3
    assert groups[-1].std is None
    within = within_dense(groups, tolerance=1.0)
    assert within == {("t", "omp_after"): 0.36, ("t", "random_before"): None}
    assert within_dense(groups, tolerance=2.0)[("t", "omp_after")] == 0.59
    md = markdown(groups)
    assert "| Dense | 81.00 ± 1.00 |  |  |  |  |  |" in md
    assert "| OMP (After) |  | 80.17 ± 0.76 | 80.00 ± 0.00 | 79.17 ± 0.29 | 81.00 ± 0.00 | 0.36 |" in md
    assert "| Random (Before) |  | 60.00 (n=1) | 90.00 (n=1) |  |  | none |" in md
    assert md.endswith("| OMP (After) | 0.36 |\n| Random (Before) | none |\n")
    with pytest.raises(ValueError, match="mixes metrics"):
        aggregate([_result("dense", 0.0, 1, 1.0), _result("gmp", 0.5, 1, 1.0, metric_name="bleu")])


def test_killed_cell_resumes_from_its_checkpoint_and_run_dirs_can_be_deleted(fake, tmp_path):
    entry, calls = fake
    out = tmp_path / "results"
    cells = build_grid(["toy"], parse_methods("omp_after,gmp"), [0.5], [1], dense=False)
    (out / "toy/omp_after/sparsity-0.5/seed-1/run/round-0/checkpoint-4").mkdir(parents=True)
    summary = run_sweep(cells, str(out), Launcher(entry, "tiny"), delete_run_dirs=True, log=lambda m: None)
    assert summary.ok and len(summary.completed) == 2
    args = {c[1]: c[4] for c in calls()}
    # omp_after starts from the shared dense run (which records no cell here: dense=False)
    assert args == {"dense": [], "omp_after": ["--resume_from_checkpoint", "True"], "gmp": []}
    assert not (out / "toy/dense/sparsity-0/seed-1/run").exists()  # deleted once omp_after had started from it
    for cell in cells:
        folder = out / cell.relpath
        assert not (folder / "run").exists() and (folder / "run.log").exists()
        assert read_result(str(folder / "result.json"), str(out)).method == cell.method.spec


def test_report_by_another_metric(fake, tmp_path):
    entry, _ = fake
    out = tmp_path / "results"
    cells = build_grid(["toy"], parse_methods("omp_before"), [0.5], [1, 2])
    assert run_sweep(cells, str(out), Launcher(entry, "tiny"), log=lambda m: None).ok
    primary = {(g["method"], g["sparsity"]): g["mean"]
               for g in json.loads(open(write_report(str(out)).json).read())["groups"]}
    report = write_report(str(out), metric="eval_high_accuracy")
    assert report.markdown.endswith(os.path.join("report-eval_high_accuracy", "summary.md"))
    data = json.loads(open(report.json).read())
    assert {(g["method"], g["sparsity"]): g["mean"] for g in data["groups"]} == {k: v - 1.0 for k, v in primary.items()}
    assert {g["metric_name"] for g in data["groups"]} == {"high_accuracy"}
    missing = write_report(str(out), metric="eval_bleu")
    assert missing.cells == 0 and missing.figures == [] and len(missing.problems) == 4
    assert "metrics.eval_bleu is not a finite number" in missing.problems[0]


def test_layer_table_lists_every_module_of_every_cell_and_names_a_malformed_one(fake, tmp_path, capsys):
    entry, _ = fake
    out = tmp_path / "results"
    cells = build_grid(["toy"], parse_methods("omp_before"), [0.25, 0.5], [1])
    assert run_sweep(cells, str(out), Launcher(entry, "tiny"), log=lambda m: None).ok
    bad = out / "toy/omp_before/sparsity-0.5/seed-1/result.json"
    data = json.loads(bad.read_text())
    data["sparsity"]["modules"]["b.weight"]["zeros"] = 17
    bad.write_text(json.dumps(data))

    assert cli.main(["report", str(out)]) == 0
    with open(out / "report" / "layer_sparsity.csv", newline="") as handle:
        rows = [(r["method"], r["sparsity"], r["module"], int(r["numel"]), int(r["zeros"]), float(r["achieved"]))
                for r in csv.DictReader(handle)]
    assert rows == [("dense", "0", "a.weight", 48, 0, 0.0), ("dense", "0", "b.weight", 16, 0, 0.0),
                    ("omp_before", "0.25", "a.weight", 48, 12, 0.25), ("omp_before", "0.25", "b.weight", 16, 4, 0.25)]
    err = capsys.readouterr().err
    assert f"no per-module row: {bad}: sparsity.modules['b.weight'] has 17 zeros in 16 weights" in err
    summary = (out / "report" / "summary.csv").read_text()
    assert "omp_before" in summary and "0.5" in summary  # the tables still count the cell


def test_copy_results_carries_only_countable_result_files_and_a_new_folder_resumes_from_them(fake, tmp_path, capsys):
    entry, calls = fake
    runs, archive, fresh = tmp_path / "runs", tmp_path / "archive", tmp_path / "fresh"
    cells = build_grid(["toy"], parse_methods("omp_before"), [0.25, 0.5], [1])
    launcher = Launcher(entry, "tiny")
    assert run_sweep(cells, str(runs), launcher, log=lambda m: None).ok
    partial = runs / "toy/omp_before/sparsity-0.5/seed-1/result.json"
    text = partial.read_text()
    partial.write_text(text[:100])

    assert cli.main(["copy-results", str(runs), str(archive)]) == 1  # one source file is not countable
    out = capsys.readouterr()
    assert "2 result file(s) copied" in out.out and f"not copied: {partial}: malformed or partial JSON" in out.err
    copied = sorted(str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file())
    assert copied == ["toy/dense/sparsity-0/seed-1/result.json", "toy/omp_before/sparsity-0.25/seed-1/result.json"]
    for rel in copied:
        assert (archive / rel).read_text() == (runs / rel).read_text()
    assert any(p.name != "result.json" for p in runs.rglob("*") if p.is_file())  # the run folders stayed behind

    partial.write_text(text)
    dense = archive / "toy/dense/sparsity-0/seed-1/result.json"
    edited = json.loads(dense.read_text())
    edited["metric"] = 1.0
    dense.write_text(json.dumps(edited))
    assert cli.main(["copy-results", str(runs), str(archive)]) == 0
    out = capsys.readouterr()
    assert "1 result file(s) copied" in out.out and "1 already there, 1 kept" in out.out and str(dense) in out.err
    assert json.loads(dense.read_text())["metric"] == 1.0  # a countable file that differs is kept ...
    assert cli.main(["copy-results", str(runs), str(archive), "--overwrite"]) == 0
    assert dense.read_text() == (runs / "toy/dense/sparsity-0/seed-1/result.json").read_text()  # ... or replaced
    capsys.readouterr()

    (archive / "toy/omp_before/sparsity-0.5/seed-1/result.json").unlink()  # a cell the other machine never finished
    assert cli.main(["copy-results", str(archive), str(fresh)]) == 0
    n_calls = len(calls())
    summary = run_sweep(cells, str(fresh), launcher, log=lambda m: None)
    assert summary.ok and len(summary.skipped) == 2
    assert [tuple(c[1:3]) for c in calls()[n_calls:]] == [("omp_before", 0.5)]
    assert pending_cells(cells, str(fresh), "tiny") == []

    assert cli.main(["copy-results", str(fresh), str(fresh)]) == 2
    assert "source and destination are the same folder" in capsys.readouterr().err
