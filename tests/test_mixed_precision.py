"""Mixed precision on the CPU: bf16 autocast keeps zeros exact; under fp16 a GradScaler's skipped steps
advance neither the sparsity schedule nor a RigL update, and gradient scores are read unscaled.

Accelerate creates no GradScaler on the CPU (`--fp16` runs there without one), so the fp16 tests give the
accelerator a real `torch.amp.GradScaler("cpu")` before training and make steps overflow on purpose.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from smc_hf import SparseTrainer, SparsityCallback, SparsityConfig, available_methods
from smc_hf.methods.gradual import GMP
from smc_hf.core.schedules import cubic_sparsity
from tests.helpers import ToyClassification, tiny_roberta, training_args

INIT_SCALE = 2.0**10


def exact_zeros(callback, optimizer) -> None:
    state = optimizer.optimizer.state
    for name, mask in callback.masks.masks.items():
        param = callback.masks.params[name]
        assert int(param.data[~mask].ne(0).sum()) == 0, name
        for key, value in state[param].items():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert int(value[~mask].ne(0).sum()) == 0, (name, key)


class Overflow(TrainerCallback):
    """Makes backward produce an inf gradient in the optimizer steps listed (1-based), as an fp16 overflow does."""

    def __init__(self, at):
        self.at, self.step = set(at), 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.get_input_embeddings().weight.register_hook(self.hook)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step += 1

    def hook(self, grad):
        if self.step not in self.at:
            return grad
        grad = grad.clone()
        grad.view(-1)[0] = math.inf
        return grad


class Trace(TrainerCallback):
    """After every Trainer step: the sparsity callback's step count, target and mask digest."""

    def __init__(self):
        self.rows = []

    def on_step_end(self, args, state, control, **kwargs):
        sparse = self.sparse
        self.rows.append((state.global_step, sparse.step, sparse.method.current_sparsity, sparse.masks.digest()))


def fp16_trainer(tmp_path, config, callbacks=(), scaler=True, method=None, **overrides):
    callback = SparsityCallback(config)
    if method is not None:
        callback.method = method
    trace = Trace()
    trace.sparse = callback
    args = training_args(tmp_path / "out", fp16=True, max_grad_norm=0.0, **overrides)
    trainer = SparseTrainer(model=tiny_roberta(), args=args, train_dataset=ToyClassification(),
                            callbacks=[callback, *callbacks, trace])
    if scaler:
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    return trainer, callback, trace


def test_bf16_autocast_keeps_pruned_weights_and_moments_exactly_zero(tmp_path):
    args = training_args(tmp_path / "out", bf16=True, max_steps=8)
    model = tiny_roberta()
    seen = []
    model.roberta.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda module, inputs, output: seen.append(output.dtype)
    )
    trainer = SparseTrainer(model=model, args=args, train_dataset=ToyClassification(),
                            sparsity_config=SparsityConfig(method="gmp", sparsity=0.6, update_every=1))
    trainer.train()
    assert seen and set(seen) == {torch.bfloat16}  # autocast really ran in bf16
    callback = trainer.sparsity_callback
    assert all(p.dtype == torch.float32 for p in callback.masks.params.values())
    exact_zeros(callback, trainer.optimizer)
    assert sum(callback.masks.weight_zeros().values()) == round(0.6 * callback.masks.numel())
    trainer.save_model()
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sum(int(weights[n][~m].ne(0).sum()) for n, m in callback.masks.masks.items()) == 0


def test_skipped_fp16_steps_do_not_advance_the_sparsity_schedule(tmp_path):
    config = SparsityConfig(method="gmp", sparsity=0.6, update_every=1)
    trainer, callback, trace = fp16_trainer(tmp_path, config, callbacks=[Overflow(at=[3, 6])], max_steps=10)
    trainer.train()
    assert trainer.accelerator.scaler.get_scale() == INIT_SCALE / 4  # two overflows halved the scale twice
    steps = {row[0]: row[1:] for row in trace.rows}
    for skipped in (3, 6):
        assert steps[skipped] == steps[skipped - 1]  # same step count, target and masks as before the skip
    assert callback.step == 8
    schedule = callback.method.schedule
    assert callback.method.current_sparsity == cubic_sparsity(8, schedule.begin, schedule.end, 0.6)
    exact_zeros(callback, trainer.optimizer)
    assert sum(callback.masks.weight_zeros().values()) == round(
        callback.method.current_sparsity * callback.masks.numel()
    )


class GradientProbe(GMP):
    """GMP that records the first selected weight's gradient as a method reading gradients sees it."""

    events = GMP.events | {"before_optimizer_step"}

    def __init__(self, config):
        super().__init__(config)
        self.seen = []

    def before_optimizer_step(self, ctx):
        self.seen.append(next(iter(ctx.masks.params.values())).grad.detach().clone())


def test_methods_read_unscaled_gradients_under_a_grad_scaler(tmp_path):
    config = SparsityConfig(method="gmp", sparsity=0.5)
    seen = {}
    for scaled in (True, False):
        probe = GradientProbe(config)
        trainer, _, _ = fp16_trainer(tmp_path / str(scaled), config, scaler=scaled, method=probe, max_steps=1)
        trainer.train()
        seen[scaled] = probe.seen[0]
    assert seen[True].abs().max() > 0
    torch.testing.assert_close(seen[True], seen[False], rtol=1e-5, atol=0)


@pytest.mark.skipif("rigl" not in available_methods(), reason="RigL is not registered")
def test_a_skipped_fp16_step_defers_the_rigl_update_to_the_next_real_step(tmp_path):
    config = SparsityConfig(method="rigl", sparsity=0.5, update_every=2, end_step=8, rigl_init="random")
    trainer, callback, trace = fp16_trainer(tmp_path, config, callbacks=[Overflow(at=[2])], max_steps=10)
    trainer.train()
    steps = {row[0]: row for row in trace.rows}
    assert steps[2][1] == 1 and steps[2][3] == steps[1][3]  # the skipped step: no count, no mask change
    assert steps[3][1] == 2 and steps[3][3] != steps[2][3]  # the update lands on the next real step
    exact_zeros(callback, trainer.optimizer)
    assert sum(callback.masks.weight_zeros().values()) == round(0.5 * callback.masks.numel())
