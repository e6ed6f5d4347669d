"""The package's layers stay honest: the import-linter contracts hold, function-level imports included, and
nothing outside `smc_hf/methods/` names a method."""

import ast
import configparser
import os
import shutil
import subprocess
import sys

from smc_hf.core.criteria import CRITERIA
from smc_hf.methods import METHODS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "smc_hf")
CONFIG = os.path.join(ROOT, ".importlinter")


def _lint(root: str) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={CONFIG!r}, no_cache=True, no_logo=True))")
    env = dict(os.environ, PYTHONPATH=root)
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _layers() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return parser["importlinter:contract:layers"]["layers"].split()


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                is_package = parts[-1] == "__init__"
                yield path, parts[:-1] if is_package else parts, is_package


def _function_level_imports(tree: ast.Module):
    """Import statements inside functions (the ones a module-level grep or a lazy reader misses)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner


def _targets(node, module: list[str], is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module if is_package else module[:-1]
        base = base[: len(base) - (node.level - 1)]
        return [".".join(base + ([node.module] if node.module else []))]
    return [node.module]


def test_import_linter_contracts_hold():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_the_linter_sees_an_upward_import_inside_a_function(tmp_path):
    """A lazy import is no way around the layers: planted in a function of core, the linter reports it."""
    copy = tmp_path / "repo"
    shutil.copytree(PACKAGE, copy / "smc_hf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.join(ROOT, "tasks"), copy / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "smc_hf" / "core" / "zeros.py", "a") as f:
        f.write("\n\ndef _planted():\n    from ..training import callbacks\n\n    return callbacks\n")
    result = _lint(str(copy))
    assert result.returncode != 0
    assert "smc_hf.core.zeros -> smc_hf.training.callbacks" in result.stdout


def test_function_level_imports_point_down():
    """Every import inside a function names a lower (or its own) layer, and never the `tasks` package."""
    layers = _layers()
    rank = {name: len(layers) - i for i, name in enumerate(layers)}  # io lowest
    seen, wrong = 0, []
    for path, module, is_package in _modules():
        with open(path) as f:
            tree = ast.parse(f.read())
        here = module[1] if len(module) > 1 else None
        for node in _function_level_imports(tree):
            for target in _targets(node, module, is_package):
                parts = target.split(".")
                if parts[0] == "tasks":
                    wrong.append(f"{path}:{node.lineno} imports {target}")
                if parts[0] != "smc_hf" or len(parts) < 2 or here not in rank:
                    continue
                seen += 1
                if parts[1] in rank and rank[parts[1]] > rank[here]:
                    wrong.append(f"{path}:{node.lineno}: {'.'.join(module)} ({here}) imports {target} ({parts[1]})")
    assert seen > 0, "no function-level import of smc_hf found: the scan is broken"
    assert not wrong, "\n".join(wrong)


def test_only_methods_name_methods():
    """Method names live in smc_hf/methods/ alone; the rest of the package asks the registry for facts.

    Criterion names ("random", "snip") are the criteria registry's own vocabulary and may appear in core.
    """
    names = set(METHODS.names()) | {a.split(" (= ")[0] for a in METHODS.names(with_aliases=True) if " (= " in a}
    names -= set(CRITERIA.names())
    assert {"rigl", "lth", "obert", "gmp", "dense", "fixed", "omp"} <= names
    found = []
    for path, module, _ in _modules():
        if module[:2] == ["smc_hf", "methods"]:
            continue
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in names:
                found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "method names outside smc_hf/methods/:\n" + "\n".join(found)
