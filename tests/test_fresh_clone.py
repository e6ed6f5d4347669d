"""What a fresh clone needs lies inside it: data paths, the demo's first step, the data script, the CI recipe."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tasks import DataArguments, get_task
from tasks import arithmetic, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "out", "data", "build", "dist", "__pycache__", "runs", "results"}
# Built from parts so this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", r"""["']\.\.["']\s*,\s*["']""" + "shared",
                               r"""["']shared["']\s*,\s*["']data["']"""]))


def _code_files():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if name.endswith((".py", ".sh", ".toml", ".cfg", ".yaml", ".json")) or name in ("Makefile", "run"):
                yield os.path.join(folder, name)


def test_no_code_reads_a_folder_beside_the_checkout():
    hits = []
    for path in _code_files():
        with open(path, encoding="utf-8", errors="replace") as handle:
            hits += [f"{os.path.relpath(path, ROOT)}:{n}" for n, line in enumerate(handle, 1) if OUTSIDE.search(line)]
    assert hits == []


def test_arithmetic_default_is_the_repository_data():
    assert os.path.realpath(arithmetic.DEFAULT_DATA_DIR) == os.path.join(os.path.realpath(ROOT), "data", "arithmetic")
    raw = get_task("mawps").load_raw(DataArguments(task="mawps", fold=1))
    assert (len(raw["train"]), len(raw["validation"])) == (1537, 384)


def test_demo_model_builds_from_the_repository_data(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    path = tiny.main(["--output", str(tmp_path / "tiny"), "--hidden_size", "16", "--num_hidden_layers", "1"])
    assert AutoModel.from_pretrained(path).config.hidden_size == 16
    assert AutoTokenizer.from_pretrained(path).is_fast


def test_get_data_script_parses_and_refuses_unknown_names():
    script = os.path.join(ROOT, "scripts", "get_data.sh")
    subprocess.run(["bash", "-n", script], check=True, timeout=30)
    help_text = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=30)
    assert help_text.returncode == 0
    for source in ("github.com/arkilpatel/SVAMP", "github.com/jafetgado/ThermoProt", "CommonsenseQA"):
        assert source in help_text.stdout
    bad = subprocess.run(["bash", script, "mnist"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown argument 'mnist'" in bad.stderr


def test_ci_runs_the_readme_commands_in_a_clone():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        block = handle.read().split("```bash\n", 1)[1].split("```", 1)[0]
    readme = [line.split("#")[0].strip() for line in block.splitlines()]
    assert readme == ["make demo", "make test"]
    ci = os.path.join(ROOT, ".ci", "run")
    subprocess.run(["bash", "-n", ci], check=True, timeout=30)
    with open(ci, encoding="utf-8") as handle:
        text = handle.read()
    assert "git clone" in text and 'for command in "make demo" "make test"; do' in text


@pytest.mark.parametrize("target", ["demo", "test"])
def test_makefile_targets_exist(target):
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as handle:
        assert re.search(rf"^{target}: setup$", handle.read(), re.M)


def test_transformers_floor_has_what_the_code_needs():
    """setup.py's floor is a release with optimizer factories (the two-rate optimizer) and the installed one meets it."""
    from packaging.version import Version
    import transformers
    from transformers.trainer_optimizer import is_optimizer_factory

    from tasks.base import TwoRateAdamW

    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as handle:
        floor = re.search(r'"transformers>=([\d.]+)"', handle.read()).group(1)
    assert Version(floor) >= Version("5.6") and Version(transformers.__version__) >= Version(floor)
    assert is_optimizer_factory(TwoRateAdamW)
