"""Regression test for issue 15 section 4, bug 6: `smc-prune --streaming` killed at any stage boundary (the
mask pieces merged, compression half done, ...) finishes when run again, with the bytes of an uninterrupted run."""

import os

import pytest

import smc_hf.pruning.streaming as streaming
from smc_hf import SparsityConfig
from smc_hf.pruning.streaming import PIECES_DIR, STATE_FILE, prune_checkpoint_streaming
from tests.helpers import tiny_roberta

CFG = SparsityConfig(method="omp", sparsity=0.5)

#: (module attribute, kill before or after it runs, compress)
BOUNDARIES = [
    ("_global_thresholds", "after", False),
    ("_write_shard", "before", False),
    ("_write_shard", "after", False),
    ("_merge_masks", "after", False),
    ("_merge_masks", "after", True),
    ("_assemble", "before", False),
    ("_assemble", "after", True),
    ("compress_folder", "after", True),
    ("remove_dense_files", "before", True),
    ("remove_dense_files", "after", True),
    ("mark_compressed", "after", True),
    ("write_model_card", "before", False),
    ("write_model_card", "after", True),
]


def _files(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "src"
    tiny_roberta().save_pretrained(path, max_shard_size="8KB")
    return str(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, source):
    """Uninterrupted outputs, without and with compression."""
    root = tmp_path_factory.mktemp("ref")
    refs = {}
    for compress in (False, True):
        out = str(root / f"out-{compress}")
        prune_checkpoint_streaming(source, out, CFG, compress=compress, progress=False)
        refs[compress] = _files(out)
    return refs


@pytest.mark.parametrize("name, when, compress", BOUNDARIES)
def test_a_run_killed_at_a_stage_boundary_finishes_with_the_same_bytes(tmp_path, monkeypatch, source, reference,
                                                                       name, when, compress):
    original = getattr(streaming, name)
    calls = {"n": 0}

    def killed(*args, **kwargs):
        calls["n"] += 1
        if when == "before":
            raise KeyboardInterrupt(f"killed before {name}")
        result = original(*args, **kwargs)
        raise KeyboardInterrupt(f"killed after {name}")

    monkeypatch.setattr(streaming, name, killed)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoint_streaming(source, str(out), CFG, compress=compress, progress=False)
    assert calls["n"] == 1 and not out.exists()
    partial = tmp_path / "out.partial"
    assert partial.is_dir()
    monkeypatch.setattr(streaming, name, original)
    prune_checkpoint_streaming(source, str(out), CFG, compress=compress, progress=False)
    assert not partial.exists() and not (out / PIECES_DIR).exists() and not (out / STATE_FILE).exists()
    assert _files(out) == reference[compress]


def test_a_half_done_dense_file_removal_is_finished_on_rerun(tmp_path, monkeypatch, source, reference):
    original = streaming.remove_dense_files

    def partly(folder):
        victim = sorted(n for n in os.listdir(folder) if n.startswith("model-") and ".bitmask." not in n)[0]
        os.remove(os.path.join(folder, victim))
        raise KeyboardInterrupt

    monkeypatch.setattr(streaming, "remove_dense_files", partly)
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoint_streaming(source, str(tmp_path / "out"), CFG, compress=True, progress=False)
    monkeypatch.setattr(streaming, "remove_dense_files", original)
    prune_checkpoint_streaming(source, str(tmp_path / "out"), CFG, compress=True, progress=False)
    assert _files(tmp_path / "out") == reference[True]


def test_changing_compress_between_attempts_starts_over(tmp_path, monkeypatch, source, reference):
    monkeypatch.setattr(streaming, "write_model_card", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoint_streaming(source, str(tmp_path / "out"), CFG, compress=True, progress=False)
    monkeypatch.undo()
    prune_checkpoint_streaming(source, str(tmp_path / "out"), CFG, compress=False, progress=False)
    assert _files(tmp_path / "out") == reference[False]
