"""smc_hf finds the benchmark's tasks through the `smc_hf.tasks` entry point and never imports them itself."""

import os
import re
import subprocess
import sys

import pytest

from smc_hf.pruning import task_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, pythonpath: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=pythonpath),
                          capture_output=True, text=True, timeout=300)


def test_setup_py_declares_the_entry_point_the_library_reads(tmp_path):
    """The declaration in setup.py, installed as package metadata, gives smc_hf the `tasks` package."""
    with open(os.path.join(ROOT, "setup.py")) as f:
        declared = re.search(r'"smc_hf\.tasks":\s*\["([^"]+)"\]', f.read())
    assert declared, "setup.py declares no smc_hf.tasks entry point"
    name, value = (part.strip() for part in declared.group(1).split("="))
    info = tmp_path / "smc_hf_tasks_probe-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: smc-hf-tasks-probe\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text(f"[{task_source.GROUP}]\n{name} = {value}\n")
    code = ("import sys; from smc_hf.pruning.task_source import task_provider; p = task_provider(); "
            "print(p.__name__, 'csqa' in p.TASKS, p.get_task('csqa').name)")
    result = _run(code, os.pathsep.join([str(tmp_path), ROOT]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tasks", "True", "csqa"]


def test_importing_smc_hf_does_not_import_tasks():
    code = ("import sys, smc_hf, smc_hf.cli.prune, smc_hf.cli.bench, smc_hf.bench, smc_hf.pruning.streaming; "
            "print(sorted(m for m in sys.modules if m == 'tasks' or m.startswith('tasks.')))")
    result = _run(code, ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_provider_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(task_source, "_registered", None)
    monkeypatch.setattr(task_source, "entry_points", lambda group: [])
    assert task_source.task_provider(required=False) is None
    with pytest.raises(LookupError, match=r"smc_hf\.tasks.*pip install -e \..*register_task_provider"):
        task_source.task_provider()


def test_a_provider_must_offer_what_calibration_uses(monkeypatch):
    monkeypatch.setattr(task_source, "_registered", None)
    with pytest.raises(TypeError, match="lacks get_task, DataArguments, ModelArguments"):
        task_source.register_task_provider(type("Half", (), {"TASKS": {}}))
