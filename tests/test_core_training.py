"""The invariants of sparse training: exact zeros in weights and optimizer state, exact counts, resume."""

import json
import os
import shutil

import pytest
import torch
from transformers import Trainer, TrainerCallback

from smc_hf import SparseTrainer, SparsityCallback, SparsityConfig, prune_model, sparsity_report
from tests.helpers import ToyClassification, tiny_roberta, training_args


def _train(tmp_path, cfg, trainer_cls=SparseTrainer, optimizers=None, model=None, **arg_overrides):
    model = model or tiny_roberta()
    args = training_args(tmp_path / "out", **arg_overrides)
    kwargs = dict(model=model, args=args, train_dataset=ToyClassification())
    if optimizers is not None:
        kwargs["optimizers"] = optimizers(model)
    if trainer_cls is Trainer:
        trainer = Trainer(callbacks=[SparsityCallback(cfg)], **kwargs)
    else:
        trainer = trainer_cls(sparsity_config=cfg, **kwargs)
    trainer.train()
    callback = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, SparsityCallback))
    return trainer, callback


def _assert_exact_zeros(callback, optimizer):
    state = getattr(optimizer, "optimizer", optimizer).state
    assert callback.masks.masks, "no masks were computed"
    for name, mask in callback.masks.masks.items():
        param = callback.masks.params[name]
        assert bool((param.data[~mask] == 0).all()), f"pruned weights of {name} are not zero"
        for key, value in state[param].items():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert bool((value[~mask] == 0).all()), f"optimizer {key} of {name} is not zero"


@pytest.mark.parametrize(
    "method, distribution",
    [("omp_before", "global"), ("random_before", "uniform"), ("gmp", "global"), ("gmp", "uniform"),
     ("omp_after", "global"), ("random_after", "uniform"), ("omp_before", "erk")],
)
def test_adamw_with_weight_decay_keeps_pruned_weights_and_moments_at_zero(tmp_path, method, distribution):
    cfg = SparsityConfig(method=method, sparsity=0.6, distribution=distribution)
    trainer, callback = _train(tmp_path, cfg)
    _assert_exact_zeros(callback, trainer.optimizer)
    zeros = callback.masks.weight_zeros()
    total = callback.masks.numel()
    if distribution == "uniform":
        for name, param in callback.masks.params.items():
            assert zeros[name] == round(0.6 * param.numel())
    else:
        assert sum(zeros.values()) == round(0.6 * total)
    report = trainer.sparsity_report()
    assert report.target == 0.6 and report.achieved == sum(zeros.values()) / total


def test_sgd_momentum_buffers_are_zeroed(tmp_path):
    cfg = SparsityConfig(method="gmp", sparsity=0.5)
    trainer, callback = _train(
        tmp_path, cfg,
        optimizers=lambda m: (torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1), None),
    )
    _assert_exact_zeros(callback, trainer.optimizer)
    state = trainer.optimizer.optimizer.state
    assert any("momentum_buffer" in state[p] for p in callback.masks.params.values())


def test_stock_trainer_with_the_callback_reaches_the_same_masks(tmp_path):
    cfg = SparsityConfig(method="gmp", sparsity=0.5)
    _, sparse_cb = _train(tmp_path / "a", cfg)
    _, stock_cb = _train(tmp_path / "b", cfg, trainer_cls=Trainer)
    assert sparse_cb.masks.digest() == stock_cb.masks.digest()


def test_gmp_counts_optimizer_steps_under_gradient_accumulation(tmp_path):
    cfg = SparsityConfig(method="gmp", sparsity=0.5, begin_step=2, end_step=5, update_every=1)
    trainer, callback = _train(
        tmp_path, cfg, max_steps=6, gradient_accumulation_steps=2, per_device_train_batch_size=2, logging_steps=1
    )
    assert callback.step == trainer.state.global_step == 6
    targets = [h["sparsity/target"] for h in trainer.state.log_history if "loss" in h]
    assert targets[0] == 0.0 and targets[1] == 0.0  # steps 1-2: dense (the event at step 2 prunes 0%)
    assert targets[4] == targets[5] == 0.5  # the target is reached exactly at end_step = 5
    assert targets[1] < targets[2] < targets[3] < targets[4]


def test_logs_carry_target_and_achieved_sparsity(tmp_path):
    cfg = SparsityConfig(method="omp", sparsity=0.5)
    trainer, _ = _train(tmp_path, cfg)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and all(h["sparsity/target"] == 0.5 and h["sparsity/achieved"] == 0.5 for h in logged)
    metrics = trainer.evaluate(ToyClassification(n=8))
    assert "eval_loss" in metrics and not any(k.startswith("sparsity/") for k in metrics)
    assert trainer.state.log_history[-1]["sparsity/achieved"] == 0.5
    stock, _ = _train(tmp_path / "stock", cfg, trainer_cls=Trainer)
    assert [h for h in stock.state.log_history if "loss" in h][0]["sparsity/achieved"] == 0.5


def _final_weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("method", ["gmp", "random_before"])
def test_resume_from_checkpoint_reaches_the_same_final_weights(tmp_path, method):
    cfg = SparsityConfig(method=method, sparsity=0.5, update_every=2)
    full, _ = _train(tmp_path / "full", cfg, save_strategy="steps", save_steps=5)
    checkpoint = tmp_path / "full" / "out" / "checkpoint-5"
    assert (checkpoint / "sparsity_masks.safetensors").is_file()
    state = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["SparsityCallback"]
    assert state["attributes"]["step"] == 5 and state["args"]["config"]["method"] == cfg.method

    resumed = SparseTrainer(
        model=tiny_roberta(seed=123), args=training_args(tmp_path / "full" / "out", save_strategy="steps", save_steps=5),
        train_dataset=ToyClassification(), sparsity_config=cfg,
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    expected, got = _final_weights(full), _final_weights(resumed)
    assert all(torch.equal(expected[n], got[n]) for n in expected)


def test_resume_also_works_when_the_trainer_recreates_callbacks_from_their_state(tmp_path):
    cfg = SparsityConfig(method="gmp", sparsity=0.5, update_every=2)
    overrides = dict(save_strategy="steps", save_steps=5, restore_callback_states_from_checkpoint=True)
    full, _ = _train(tmp_path, cfg, **overrides)
    resumed = SparseTrainer(model=tiny_roberta(seed=5), args=training_args(tmp_path / "out", **overrides),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-5"))
    assert resumed.sparsity_callback.step == 10
    expected, got = _final_weights(full), _final_weights(resumed)
    assert all(torch.equal(expected[n], got[n]) for n in expected)


def test_two_round_method_resumes_at_the_round_it_stopped_in(tmp_path):
    cfg = SparsityConfig(method="omp_after", sparsity=0.5)
    out = tmp_path / "out"
    full, _ = _train(tmp_path, cfg, save_strategy="steps", save_steps=5)
    expected = _final_weights(full)
    assert (out / "round-0" / "sparsity_round.json").is_file()
    assert (out / "round-0" / "model.safetensors").is_file()

    # Killed mid-way through the second round: its checkpoint-5 survives, the end does not.
    shutil.rmtree(out / "checkpoint-10")
    for leftover in ("model.safetensors", "config.json", "sparsity_masks.safetensors"):
        if (out / leftover).exists():
            os.remove(out / leftover)
    resumed = SparseTrainer(model=tiny_roberta(seed=7), args=training_args(out, save_strategy="steps", save_steps=5),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    resumed.train(resume_from_checkpoint=True)
    got = _final_weights(resumed)
    assert all(torch.equal(expected[n], got[n]) for n in expected)

    # Killed between the rounds: only round-0 is complete.
    shutil.rmtree(out / "checkpoint-5")
    shutil.rmtree(out / "checkpoint-10")
    resumed = SparseTrainer(model=tiny_roberta(seed=9), args=training_args(out, save_strategy="steps", save_steps=5),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    resumed.train(resume_from_checkpoint=True)
    got = _final_weights(resumed)
    assert all(torch.equal(expected[n], got[n]) for n in expected)


def test_schedule_past_the_end_of_training_fails_before_the_first_step(tmp_path):
    model = tiny_roberta()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="end_step = 50 is step 50, past the end of training"):
        _train(tmp_path, SparsityConfig(method="gmp", sparsity=0.5, end_step=50), model=model)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_multi_round_method_under_a_stock_trainer_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="trains in 2 rounds; run it with SparseTrainer"):
        _train(tmp_path, SparsityConfig(method="omp_after", sparsity=0.5), trainer_cls=Trainer)


def test_skip_dense_phase_prunes_at_once(tmp_path):
    cfg = SparsityConfig(method="omp_after", sparsity=0.5, skip_dense_phase=True)
    trainer, callback = _train(tmp_path, cfg, trainer_cls=Trainer)
    assert not (tmp_path / "out" / "round-0").exists()
    assert sum(callback.masks.weight_zeros().values()) == round(0.5 * callback.masks.numel())


def test_save_model_writes_masks_and_a_declarative_config_block(tmp_path):
    trainer, callback = _train(tmp_path, SparsityConfig(method="omp", sparsity=0.5))
    trainer.save_model()
    out = tmp_path / "out"
    block = json.loads((out / "config.json").read_text())["sparsity"]
    assert block["method"] == "omp_before" and block["distribution"] == "global"
    assert block["target"] == 0.5 and block["achieved"] == 0.5
    assert (out / "sparsity_masks.safetensors").is_file()


def test_prune_model_is_exact_and_refuses_training_methods():
    model = tiny_roberta()
    masks = prune_model(model, SparsityConfig(method="omp", sparsity=0.3))
    assert sum(masks.weight_zeros().values()) == round(0.3 * masks.numel())
    report = sparsity_report(model, config=SparsityConfig(method="omp", sparsity=0.3))
    assert report.achieved == round(0.3 * masks.numel()) / masks.numel() and len(report.modules) == 12
    with pytest.raises(ValueError, match="needs training"):
        prune_model(tiny_roberta(), SparsityConfig(method="gmp", sparsity=0.3))


def test_report_measures_the_weights_not_the_masks():
    model = tiny_roberta()
    masks = prune_model(model, SparsityConfig(method="omp", sparsity=0.5))
    name = masks.names[0]
    with torch.no_grad():
        masks.params[name][masks.masks[name]] = 0.0  # zero the kept weights of one layer too
    report = sparsity_report(model, masks=masks)
    row = next(m for m in report.modules if m.name == name)
    assert row.achieved == 1.0 and row.target < 1.0
    assert report.to_dict()["modules"][name]["zeros"] == masks.params[name].numel()


class _CheckEveryStep(TrainerCallback):
    """Asserts after every optimizer step that pruned weights and their optimizer state are exactly zero."""

    def __init__(self, sparsity_callback):
        self.sparsity_callback, self.checked = sparsity_callback, 0

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        masks = self.sparsity_callback.masks
        if masks.is_dense:
            return
        opt_state = getattr(optimizer, "optimizer", optimizer).state
        for name, mask in masks.masks.items():
            param = masks.params[name]
            assert bool((param.data[~mask] == 0).all()), f"step {state.global_step + 1}: {name}"
            for value in opt_state.get(param, {}).values():
                if torch.is_tensor(value) and value.shape == mask.shape:
                    assert bool((value[~mask] == 0).all())
        self.checked += 1


class _MixingSGD(torch.optim.Optimizer):
    """Not elementwise: every weight moves by the mean gradient of its tensor (as Muon/Shampoo mix entries)."""

    def __init__(self, params, lr=0.01):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.mean() + p.grad, alpha=-group["lr"])


@pytest.mark.parametrize("optimizer", ["adamw", "mixing"])
def test_pruned_weights_and_state_are_zero_after_every_single_step(tmp_path, optimizer):
    cfg = SparsityConfig(method="gmp", sparsity=0.6, update_every=1)
    sparsity_cb = SparsityCallback(cfg)
    checker = _CheckEveryStep(sparsity_cb)
    model = tiny_roberta()
    kwargs = {}
    if optimizer == "mixing":
        kwargs["optimizers"] = (_MixingSGD(model.parameters()), None)
    trainer = Trainer(model=model, args=training_args(tmp_path), train_dataset=ToyClassification(),
                      callbacks=[sparsity_cb, checker], **kwargs)
    trainer.train()
    assert checker.checked >= 8  # every step once the first GMP event pruned
