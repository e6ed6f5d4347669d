"""Regression tests for issue 15 section 4, bug 13 (data loss): `smc-prune --overwrite` never deletes a folder
smc_hf did not create, and never an output that is, or contains, its input."""

import os

import pytest

from smc_hf.io.folders import staged_folder
from smc_hf.cli.prune import main
from tests.helpers import tiny_roberta


def _tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "models" / "src"
    tiny_roberta().save_pretrained(path)
    (tmp_path / "models" / "sibling").mkdir()
    (tmp_path / "models" / "sibling" / "notes.txt").write_text("precious")
    return path


@pytest.mark.parametrize("streaming", [False, True])
def test_overwrite_keeps_an_unrelated_old_folder(tmp_path, source, streaming):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("replace me")
    old = tmp_path / "out.old"
    old.mkdir()
    (old / "mine.txt").write_text("the user's own folder")
    argv = [str(source), "--method", "omp", "--sparsity", "0.5", "--output", str(out), "--overwrite",
            "--progress", "false"] + (["--streaming"] if streaming else [])
    assert main(argv) == 0
    assert (old / "mine.txt").read_text() == "the user's own folder"
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["models", "out", "out.old"]


@pytest.mark.parametrize("which", ["same", "parent", "grandparent"])
@pytest.mark.parametrize("streaming", [False, True])
def test_an_output_that_is_or_contains_the_input_is_refused_before_anything_is_touched(
        tmp_path, source, capsys, which, streaming):
    out = {"same": source, "parent": source.parent, "grandparent": tmp_path}[which]
    before = _tree(tmp_path)
    argv = [str(source), "--method", "omp", "--sparsity", "0.5", "--output", str(out), "--overwrite",
            "--progress", "false"] + (["--streaming"] if streaming else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"output folder {out} {'is' if which == 'same' else 'contains'} the input {source}" in err
    assert "choose an --output outside it" in err
    assert _tree(tmp_path) == before
    assert (tmp_path / "models" / "sibling" / "notes.txt").read_text() == "precious"


def test_staged_folder_refuses_to_replace_its_own_source(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="contains the input"):
        with staged_folder(tmp_path / "a", overwrite=True, sources=(str(tmp_path / "a" / "b"),)):
            pass
    assert (tmp_path / "a" / "b").is_dir() and not (tmp_path / "a.partial").exists()
