"""Best-model selection counts only evaluations at the run's final sparsity (GMP must not report a denser step)."""

from __future__ import annotations

from types import SimpleNamespace

from transformers import TrainerState

from smc_hf.training.best_model import BestAtSparsityCallback


class _Sparsity:
    def __init__(self):
        self.target, self.masks = 0.0, None

    def target_sparsity(self):
        return self.target


def test_best_is_forgotten_when_the_target_sparsity_changes():
    sparsity, state = _Sparsity(), TrainerState()
    guard, args = BestAtSparsityCallback(sparsity), SimpleNamespace(load_best_model_at_end=True)
    guard.on_train_begin(args, state, None)
    state.best_metric, state.best_global_step, state.best_model_checkpoint = 90.0, 2, "out/checkpoint-2"
    guard.on_step_end(args, state, None)  # no change: the best stands
    assert (state.best_metric, state.best_global_step) == (90.0, 2)
    sparsity.target = 0.5  # a GMP event
    guard.on_step_end(args, state, None)
    assert (state.best_metric, state.best_global_step, state.best_model_checkpoint) == (None, None, None)
    state.best_metric, state.best_global_step = 60.0, 6
    guard.on_step_end(args, state, None)  # RigL-like: masks move, sparsity does not
    assert (state.best_metric, state.best_global_step) == (60.0, 6)
