"""Faults on resume: partial mask files, checkpoints a kill left half-written, LTH killed at a round boundary,
truncated files."""

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import RobertaConfig, RobertaForSequenceClassification

from smc_hf import SparseTrainer, SparsityConfig, prune_model
from smc_hf.pruning.sparse_folder import save_sparse_pretrained
from smc_hf.io.mask_file import MASKS_FILE
from tests.helpers import ToyClassification, tiny_roberta, training_args


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def _drop_layer(path, layer_pattern):
    masks = load_file(path)
    kept = {n: m for n, m in masks.items() if layer_pattern not in n}
    assert len(kept) < len(masks)
    save_file(kept, path, metadata={"format": "smc_hf.bool_masks"})


def test_a_partial_mask_file_is_refused_by_fixed_unless_the_dense_layers_are_ignored(tmp_path):
    model = tiny_roberta()
    cfg = SparsityConfig(method="omp", sparsity=0.5)
    masks = prune_model(model, cfg)
    save_sparse_pretrained(model, tmp_path / "sparse", masks, cfg, packed_masks=False)
    _drop_layer(str(tmp_path / "sparse" / MASKS_FILE), "layer.1.")

    def fixed(ignore=None):
        loaded = RobertaForSequenceClassification.from_pretrained(tmp_path / "sparse")
        return SparseTrainer(model=loaded, args=training_args(tmp_path / "t", max_steps=2),
                             train_dataset=ToyClassification(n=8),
                             sparsity_config=SparsityConfig(method="fixed", ignore=ignore))

    with pytest.raises(ValueError, match=r"covers 6 of the 12 selected weights; no mask for .*layer\.1\."):
        fixed().train()
    trainer = fixed(ignore=[r"layer\.1\."])
    trainer.train()
    assert sorted(trainer.sparsity_callback.masks.masks) == sorted(n for n in masks.masks if "layer.1." not in n)


def test_a_partial_mask_file_in_a_checkpoint_is_refused_on_resume(tmp_path):
    cfg = SparsityConfig(method="omp", sparsity=0.5)
    args = dict(max_steps=10, save_strategy="steps", save_steps=5)
    SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path / "out", **args),
                  train_dataset=ToyClassification(), sparsity_config=cfg).train()
    _drop_layer(str(tmp_path / "out" / "checkpoint-5" / MASKS_FILE), "layer.0.attention")
    resumed = SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path / "out", **args),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    with pytest.raises(ValueError, match=r"checkpoint-5/sparsity_masks.safetensors covers 8 of the 12"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-5"))


def _kill_while_saving(checkpoint):
    """What a kill during `_save_checkpoint` leaves: the weights, no trainer_state.json (written last)."""
    os.remove(checkpoint / "trainer_state.json")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        if (checkpoint / name).exists():
            os.remove(checkpoint / name)


@pytest.mark.parametrize("method", ["gmp", "omp_after"])
def test_resume_true_skips_checkpoints_a_kill_left_incomplete(tmp_path, method):
    cfg = SparsityConfig(method=method, sparsity=0.5, update_every=2)
    args = dict(max_steps=10, save_strategy="steps", save_steps=5)

    def run(model, resume=None):
        trainer = SparseTrainer(model=model, args=training_args(tmp_path / "out", **args),
                                train_dataset=ToyClassification(), sparsity_config=cfg)
        trainer.train(resume_from_checkpoint=resume)
        return _weights(trainer.model)

    expected = run(tiny_roberta())
    out = tmp_path / "out"
    rounds = sorted(p for p in out.iterdir() if p.name.startswith("round-"))
    if rounds:  # omp_after: killed in round 0, while writing its checkpoint-10
        shutil.rmtree(out)
        expected = run(tiny_roberta())
        for name in os.listdir(out):
            if name != "round-0":
                path = out / name
                shutil.rmtree(path) if path.is_dir() else os.remove(path)
        for name in ("sparsity_round.json", "model.safetensors", "config.json"):
            os.remove(out / "round-0" / name)
        _kill_while_saving(out / "round-0" / "checkpoint-10")
    else:
        _kill_while_saving(out / "checkpoint-10")
    assert _same(run(tiny_roberta(seed=4), resume=True), expected)

    # Killed while writing the very first checkpoint: nothing to resume, the rerun starts afresh.
    folder = out / "round-0" if rounds else out
    shutil.rmtree(folder / "checkpoint-10")
    _kill_while_saving(folder / "checkpoint-5")
    assert _same(run(tiny_roberta(), resume=True), expected)


def _dropout_roberta():
    torch.manual_seed(0)
    return RobertaForSequenceClassification(RobertaConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40, num_labels=2, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    ))


def test_lth_killed_at_a_round_boundary_resumes_to_the_same_weights_and_masks(tmp_path):
    cfg = SparsityConfig(method="lth", sparsity=0.36)
    out = tmp_path / "out"
    args = dict(max_steps=4, logging_steps=4, save_strategy="steps", save_steps=2)

    def trainer(model):
        return SparseTrainer(model=model, args=training_args(out, **args), train_dataset=ToyClassification(),
                             sparsity_config=cfg)

    full = trainer(_dropout_roberta())
    full.train()
    expected, expected_masks = _weights(full.model), full.sparsity_callback.masks.digest()
    # Killed right after round 1 was saved: no checkpoint of round 2 (the last, in output_dir) exists.
    for name in os.listdir(out):
        if not name.startswith("round-"):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else os.remove(path)
    resumed = trainer(_dropout_roberta())
    resumed.train(resume_from_checkpoint=True)
    assert resumed.sparsity_callback.masks.digest() == expected_masks
    got = _weights(resumed.model)
    assert max(float((expected[n] - got[n]).abs().max()) for n in expected) == 0.0


def test_a_truncated_checkpoint_file_is_named_before_resuming(tmp_path):
    cfg = SparsityConfig(method="gmp", sparsity=0.5, update_every=2)
    args = dict(max_steps=10, save_strategy="steps", save_steps=5)
    SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path / "out", **args),
                  train_dataset=ToyClassification(), sparsity_config=cfg).train()
    weights = tmp_path / "out" / "checkpoint-5" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    resumed = SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path / "out", **args),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    with pytest.raises(ValueError, match=r"checkpoint-5/model.safetensors: not a valid safetensors file"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-5"))
