"""Regression tests for issue 15 section 4, bug 7: file names read from a file's content (compressed index,
sharded index, LTH state) never reach outside their folder."""

import json
import os

import pytest

from smc_hf import SparsityConfig, prune_model
from smc_hf.io.folders import load_weights
from smc_hf.pruning.sparse_folder import save_sparse_pretrained
from smc_hf.io.compressed import COMPRESSED_INDEX, decompress_folder, load_compressed_state_dict
from smc_hf.io.safetensors_io import INDEX_FILE, checkpoint_files, member_path
from tests.helpers import tiny_roberta

HOSTILE = ["../escaped.safetensors", "/tmp/escaped.safetensors", "sub/../../x.safetensors", "..", ".",
           "a\\b.safetensors", "", "C:evil.safetensors", "x/y.safetensors", 7]


@pytest.mark.parametrize("name", HOSTILE)
def test_member_path_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(ValueError, match="is not a plain file name.*restore it"):
        member_path(str(tmp_path), name, "index.json")


def test_member_path_keeps_plain_names_and_optionally_subfolders(tmp_path):
    assert member_path("f", "model-00001-of-00002.safetensors", "i") == os.path.join("f", "model-00001-of-00002.safetensors")
    assert member_path("f", "round-0/w.safetensors", "i", subfolders=True) == os.path.join("f", "round-0", "w.safetensors")
    with pytest.raises(ValueError, match="relative path of plain names"):
        member_path("f", "round-0/../../w", "i", subfolders=True)


def _compressed(tmp_path):
    model = tiny_roberta()
    masks = prune_model(model, SparsityConfig(method="omp", sparsity=0.5))
    return save_sparse_pretrained(model, tmp_path / "c", masks, compress=True, max_shard_size="20KB")


@pytest.mark.parametrize("where", ["dense_value", "compressed_key", "weight_map"])
def test_an_edited_compressed_index_cannot_make_decompress_write_outside(tmp_path, where):
    out = _compressed(tmp_path)
    path = os.path.join(out, COMPRESSED_INDEX)
    index = json.load(open(path))
    first = sorted(index["dense_files"])[0]
    if where == "dense_value":
        index["dense_files"][first] = "../../escaped.safetensors"
    elif where == "compressed_key":
        index["dense_files"]["../c/" + first] = index["dense_files"].pop(first)
    else:
        index["weight_map"][next(iter(index["weight_map"]))] = "/etc/passwd"
    json.dump(index, open(path, "w"))
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(ValueError, match=f"{COMPRESSED_INDEX}: file name .* is not a plain file name"):
        decompress_folder(out, str(dest))
    with pytest.raises(ValueError, match="is not a plain file name"):
        load_compressed_state_dict(out)
    assert not (tmp_path / "escaped.safetensors").exists() and not (tmp_path / "deep").exists()


def test_an_edited_sharded_index_is_refused_by_every_reader(tmp_path):
    folder = tmp_path / "sharded"
    tiny_roberta().save_pretrained(folder, max_shard_size="8KB")
    shard = checkpoint_files(str(folder))[0]
    os.rename(shard, tmp_path / "outside.safetensors")
    index = json.load(open(folder / INDEX_FILE))
    index["weight_map"] = {k: ("../outside.safetensors" if v == os.path.basename(shard) else v)
                           for k, v in index["weight_map"].items()}
    json.dump(index, open(folder / INDEX_FILE, "w"))
    with pytest.raises(ValueError, match="'../outside.safetensors' is not a plain file name"):
        checkpoint_files(str(folder))
    with pytest.raises(ValueError, match="'../outside.safetensors' is not a plain file name"):
        load_weights(tiny_roberta(), str(folder))
