"""The saved sparse format: plain from_pretrained, exact masks, declarative config block, card, compression."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification

from smc_hf import MASKS_FILE, MaskSet, SparseTrainer, SparsityConfig, prune_model
from smc_hf.io.folders import load_weights, staged_folder
from smc_hf.io.sparsity_block import read_sparsity_block, write_config_block
from smc_hf.pruning.sparse_folder import save_sparse_pretrained
from smc_hf.io.compressed import COMPRESSED_INDEX, decompress_folder, load_compressed_state_dict
from smc_hf.pruning.loading import from_compressed
from smc_hf.io.mask_file import pack_bits, read_masks, save_masks, unpack_bits
from smc_hf.io.safetensors_io import checkpoint_files, read_header
from tests.helpers import ToyClassification, tiny_roberta, training_args

CFG = SparsityConfig(method="omp", sparsity=0.5)


def _sparse_model(sparsity=0.5, kept_zero=True):
    """A pruned tiny model; one kept weight is set to exactly zero (the mask, not the zeros, must survive)."""
    model = tiny_roberta()
    cfg = SparsityConfig(method="omp", sparsity=sparsity)
    masks = prune_model(model, cfg)
    name = masks.names[0]
    if kept_zero:
        position = masks.masks[name].nonzero()[0]
        with torch.no_grad():
            masks.params[name][tuple(position)] = 0.0
    return model, masks, cfg, name


def _load(folder):
    return AutoModelForSequenceClassification.from_pretrained(folder)


def test_saved_folder_loads_with_plain_from_pretrained_and_keeps_the_exact_mask(tmp_path):
    model, masks, cfg, name = _sparse_model()
    out = save_sparse_pretrained(model, tmp_path / "out", masks, cfg, command="smc-prune x --sparsity 0.5")
    loaded = _load(out)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    saved = read_masks(os.path.join(out, MASKS_FILE))
    assert saved.keys() == masks.masks.keys()
    for key, mask in masks.masks.items():
        assert torch.equal(saved[key], mask)
    # one kept weight is zero: the mask file says kept although the weight says zero
    assert int((loaded.state_dict()[name] == 0).sum()) == int((~saved[name]).sum()) + 1
    assert not os.path.exists(str(tmp_path / "out") + ".partial")


def test_config_block_is_declarative_data_with_per_module_numbers(tmp_path):
    model, masks, cfg, _ = _sparse_model()
    save_sparse_pretrained(model, tmp_path / "out", masks, cfg)
    block = read_sparsity_block(tmp_path / "out")
    total = masks.numel()
    assert block["method"] == "omp_before" and block["distribution"] == "global" and block["target"] == 0.5
    assert block["masks_file"] == MASKS_FILE and block["masks_format"] == "packed_bits"
    assert block["selected_numel"] == total
    assert sum(m["zeros"] for m in block["modules"].values()) == round(0.5 * total) + 1
    assert block["achieved"] == (round(0.5 * total) + 1) / total
    assert set(block["modules"]) == set(masks.names)
    assert block["smc_hf_version"]


def test_loading_never_executes_names_in_the_block(tmp_path):
    model, masks, cfg, _ = _sparse_model()
    save_sparse_pretrained(model, tmp_path / "out", masks, cfg)
    canary = tmp_path / "pwned"
    block = read_sparsity_block(tmp_path / "out")
    block.update(method=f"__import__('os').system('touch {canary}')", format="os.system", distribution="eval")
    write_config_block(tmp_path / "out", block)
    loaded = _load(tmp_path / "out")
    trainer = SparseTrainer(model=loaded, args=training_args(tmp_path / "t", max_steps=1),
                            train_dataset=ToyClassification(n=4), sparsity_config=SparsityConfig(method="fixed"))
    trainer.train()
    assert not canary.exists()
    with open(tmp_path / "out" / "config.json") as f:
        data = json.load(f)
    data["sparsity"] = "rm -rf /"
    with open(tmp_path / "out" / "config.json", "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match="must be an object"):
        read_sparsity_block(tmp_path / "out")


def test_fixed_method_continues_training_with_the_saved_mask(tmp_path):
    model, masks, cfg, name = _sparse_model()
    save_sparse_pretrained(model, tmp_path / "out", masks, cfg)
    loaded = _load(tmp_path / "out")
    trainer = SparseTrainer(model=loaded, args=training_args(tmp_path / "t", max_steps=4),
                            train_dataset=ToyClassification(n=16), sparsity_config=SparsityConfig(method="fixed"))
    trainer.train()
    weights = dict(loaded.named_parameters())
    for key, mask in masks.masks.items():
        assert bool((weights[key][~mask] == 0).all()), key
    kept_zero = tuple(masks.masks[name].nonzero()[0])
    assert weights[name][kept_zero] != 0, "a kept weight that happened to be zero must stay trainable"
    assert trainer.sparsity_callback.masks.digest() == masks.digest()


def test_packed_and_bool_mask_files_hold_the_same_masks(tmp_path):
    _, masks, _, _ = _sparse_model()
    save_masks(masks.state_dict(), tmp_path / "packed.safetensors", packed=True)
    masks.save(str(tmp_path / "bool.safetensors"))
    packed, plain = MaskSet(masks.params), MaskSet(masks.params)
    packed.load(str(tmp_path / "packed.safetensors"))
    plain.load(str(tmp_path / "bool.safetensors"))
    assert packed.digest() == plain.digest() == masks.digest()
    packed_infos, _ = read_header(str(tmp_path / "packed.safetensors"))
    bool_infos, _ = read_header(str(tmp_path / "bool.safetensors"))
    assert sum(i.nbytes for i in packed_infos) == sum((p.numel() + 7) // 8 for p in masks.params.values())
    assert sum(i.nbytes for i in bool_infos) == masks.numel()
    odd = torch.rand(3, 5) > 0.5  # 15 bits: padding must not leak into the mask
    assert torch.equal(unpack_bits(pack_bits(odd), (3, 5)), odd)


def test_bad_mask_files_are_clear_errors(tmp_path):
    model, masks, _, name = _sparse_model()
    wrong = {name: torch.ones(3, 3, dtype=torch.bool)}
    save_masks(wrong, tmp_path / "shape.safetensors")
    with pytest.raises(ValueError, match=rf"mask for {name} has shape \(3, 3\)"):
        MaskSet(masks.params).load(str(tmp_path / "shape.safetensors"))
    save_masks(masks.state_dict(), tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated.safetensors: not a valid safetensors file"):
        MaskSet(masks.params).load(str(tmp_path / "truncated.safetensors"))
    save_file({name: torch.zeros(3, dtype=torch.uint8)}, tmp_path / "short.safetensors",
              metadata={"format": "smc_hf.packed_bits", "shapes": json.dumps({name: [16, 16]})})
    with pytest.raises(ValueError, match="cannot hold shape"):
        read_masks(str(tmp_path / "short.safetensors"))
    save_file({name: torch.zeros(16, 16)}, tmp_path / "float.safetensors")
    with pytest.raises(ValueError, match="must be bool tensors or packed bits"):
        read_masks(str(tmp_path / "float.safetensors"))


def test_missing_shard_and_pickle_only_folders_are_refused(tmp_path):
    model = tiny_roberta()
    model.save_pretrained(tmp_path / "sharded", max_shard_size="8KB")
    files = checkpoint_files(str(tmp_path / "sharded"))
    assert len(files) > 1
    os.remove(files[1])
    with pytest.raises(FileNotFoundError, match=os.path.basename(files[1])):
        checkpoint_files(str(tmp_path / "sharded"))
    with pytest.raises(FileNotFoundError, match="missing"):
        load_weights(tiny_roberta(), str(tmp_path / "sharded"))
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ValueError, match="safetensors only"):
        checkpoint_files(str(tmp_path / "pickled"))


def test_staged_folder_never_leaves_a_half_written_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_folder(out) as stage:
            (tmp_path / "out.partial" / "model.safetensors").write_bytes(b"half")
            assert stage.endswith("out.partial")
            raise RuntimeError("killed")
    assert not out.exists() and not (tmp_path / "out.partial").exists()
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with staged_folder(out):
            pass
    with staged_folder(out, overwrite=True) as stage:
        (tmp_path / "out.partial" / "new").write_text("y")
    assert sorted(os.listdir(out)) == ["new"]


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_compressed_save_restores_the_dense_model_exactly(tmp_path, sparsity):
    model, masks, cfg, _ = _sparse_model(sparsity)
    out = save_sparse_pretrained(model, tmp_path / "c", masks, cfg, compress=True, max_shard_size="20KB")
    names = os.listdir(out)
    assert COMPRESSED_INDEX in names and not any(n.startswith("model") and n.endswith(".safetensors")
                                                 and ".bitmask." not in n for n in names)
    block = read_sparsity_block(out)
    assert block["weights_format"] == "bitmask_compressed"
    state = load_compressed_state_dict(out)
    for key, value in model.state_dict().items():
        if key in state:
            assert torch.equal(state[key], value), key
    restored = from_compressed(out)
    for key, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    decompress_folder(out, str(tmp_path / "dense"))
    dense = _load(tmp_path / "dense")
    for key, value in model.state_dict().items():
        assert torch.equal(dense.state_dict()[key], value), key
    # selected fp32 weights cost (1 - s) * 4 bytes + 1 bit each instead of 4 bytes
    assert block["compressed_ratio"] < 1.0
    index = json.load(open(os.path.join(out, COMPRESSED_INDEX)))
    os.remove(os.path.join(out, sorted(index["dense_files"])[0]))
    with pytest.raises(FileNotFoundError, match="missing"):
        load_compressed_state_dict(out)
