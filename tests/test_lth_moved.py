"""Regression test for issue 15 section 4 (poor message): the LTH rewind file is recorded relative to the run's
folder, so a run moved elsewhere after a kill resumes to the same ticket."""

import json
import os
import shutil

import torch

from smc_hf import SparseTrainer, SparsityConfig
from tests.helpers import ToyClassification, tiny_roberta, training_args


def _trainer(output_dir, cfg, model=None):
    args = training_args(output_dir, max_steps=4, logging_steps=4, save_strategy="steps", save_steps=2)
    return SparseTrainer(model=model or tiny_roberta(), args=args, train_dataset=ToyClassification(),
                         sparsity_config=cfg)


def test_a_moved_lth_run_resumes_to_the_same_ticket(tmp_path):
    cfg = SparsityConfig(method="lth", sparsity=0.36)
    first = tmp_path / "first" / "out"
    full = _trainer(first, cfg)
    full.train()
    expected = {n: p.detach().clone() for n, p in full.model.named_parameters()}
    expected_masks = full.sparsity_callback.masks.digest()
    state = json.load(open(first / "round-0" / "sparsity_round.json"))["method_state"]
    assert state["rewind_file"] == "round-0/lth_rewind.safetensors"
    checkpoint_state = json.load(open(first / "round-1" / "checkpoint-2" / "trainer_state.json"))
    assert "round-0/lth_rewind.safetensors" in json.dumps(checkpoint_state) and str(tmp_path) not in json.dumps(
        checkpoint_state)

    # Killed in the middle of round 1, then the whole run folder is moved.
    shutil.rmtree(first / "round-1" / "checkpoint-4")
    for name in ("sparsity_round.json", "model.safetensors", "config.json", "sparsity_masks.safetensors"):
        os.remove(first / "round-1" / name)
    for name in ("checkpoint-2", "checkpoint-4"):
        shutil.rmtree(first / name)
    for name in ("model.safetensors", "config.json", "sparsity_masks.safetensors", "training_args.bin"):
        if (first / name).exists():
            os.remove(first / name)
    moved = tmp_path / "elsewhere" / "out"
    shutil.move(str(tmp_path / "first"), str(tmp_path / "elsewhere"))
    trainer = _trainer(moved, cfg, model=tiny_roberta(seed=11))
    trainer.train(resume_from_checkpoint=True)
    assert trainer.sparsity_callback.masks.digest() == expected_masks
    got = dict(trainer.model.named_parameters())
    assert all(torch.equal(expected[n], got[n]) for n in expected)
