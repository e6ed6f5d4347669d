"""Best-model selection that only counts evaluations at the run's final sparsity.

With `load_best_model_at_end`, the Trainer keeps the checkpoint with the best `metric_for_best_model`. Under a
schedule that prunes during training (GMP, gradual oBERT) the best evaluation is usually an early, denser one:
the release's fairseq runs could report such a pre-target checkpoint, while its arithmetic code resets
best-tracking after the final prune. This callback does the latter for every method: whenever the target
sparsity changes, the Trainer's best metric, step and checkpoint are forgotten, so the best is taken among
evaluations since the last change (for RigL, whose sparsity never changes, over the whole run).

When the Trainer loads the best checkpoint at the end of a round, the masks are read back from that
checkpoint, so the saved model, its mask file and the next round's pruning all refer to the loaded weights.
"""

from __future__ import annotations

from typing import Optional

from transformers import TrainerCallback

from ..core.masks import load_masks


class BestAtSparsityCallback(TrainerCallback):
    """Keeps `state.best_*` to evaluations at the current target sparsity; installed by `SparseTrainer`."""

    def __init__(self, sparsity_callback):
        self.sparsity = sparsity_callback
        self._target: Optional[float] = None

    def _forget_if_changed(self, state) -> None:
        target = self.sparsity.target_sparsity()
        if self._target is not None and target != self._target:
            state.best_metric = None
            state.best_global_step = None
            state.best_model_checkpoint = None
        self._target = target

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run restores the method state (and so the target) before this runs.
        self._target = self.sparsity.target_sparsity()

    def on_step_end(self, args, state, control, **kwargs):
        self._forget_if_changed(state)

    def on_train_end(self, args, state, control, **kwargs):
        masks = self.sparsity.masks
        if not args.load_best_model_at_end or not state.best_model_checkpoint or masks is None:
            return
        if load_masks(state.best_model_checkpoint, masks) is None:
            masks.clear()
