"""`SparsityCallback`: the only place that reacts to Trainer events.

Order inside one optimizer step (transformers >= 4.45):
clip -> on_pre_optimizer_step (method sees dense grads, then grads are masked) -> optimizer.step() ->
on_optimizer_step (method may change masks; weights and optimizer state are masked) -> scheduler.
Works with a stock `Trainer`; `SparseTrainer` adds multi-round methods and sparsity in `log_history`.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import distributed
from .config import SparsityConfig
from .context import PruneContext
from .masks import MASKS_FILE, MaskSet, preserves_zeros
from .methods import SparsityMethod, build_method

logger = logging.getLogger(__name__)


class SparsityCallback(TrainerCallback, ExportableState):
    """Computes masks with the configured method and keeps them applied through training.

    State for resuming (round, step, method state) goes to `trainer_state.json` through
    `ExportableState`; masks go to `sparsity_masks.safetensors` in each checkpoint folder.
    """

    def __init__(self, config: SparsityConfig | dict | None = None):
        if config is None:
            config = SparsityConfig()
        elif isinstance(config, dict):
            config = SparsityConfig.from_dict(config)
        self.config = config
        self.method = build_method(config)
        self.masks: Optional[MaskSet] = None
        self.round = 0
        self.step = 0
        #: Set by SparseTrainer, which runs the rounds of multi-round methods.
        self.rounds_driver = False
        #: `masks.version` when weights and optimizer state were last masked.
        self._applied_version = -1
        #: Checkpoint folder to read masks from when resuming (SparseTrainer resolves it).
        self.resume_dir: Optional[str] = None
        #: The fp16 loss scale before the current optimizer step, to recognise a skipped step by its back-off.
        self._scale_before: Optional[float] = None

    # -- ExportableState -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "args": {"config": self.config.to_dict()},
            "attributes": {
                "round": self.round,
                "step": self.step,
                "method_state": self.method.state_dict(),
                "has_masks": self.masks is not None and not self.masks.is_dense,
                "rounds_driver": self.rounds_driver,
            },
        }

    # -- helpers ---------------------------------------------------------------------------------------
    def context(self, args, state, model=None, optimizer=None, dataloader=None) -> PruneContext:
        seed = self.config.mask_seed if self.config.mask_seed is not None else getattr(args, "seed", 0)
        return PruneContext(
            model=model, masks=self.masks, step=self.step, max_steps=state.max_steps, round=self.round,
            seed=seed, optimizer=optimizer, dataloader=dataloader, args=args,
            output_dir=getattr(args, "output_dir", None),
        )

    def target_sparsity(self) -> float:
        return self.method.current_sparsity

    def sparsity_logs(self) -> dict[str, float]:
        if self.masks is None:
            return {}
        return {
            "sparsity/target": round(self.target_sparsity(), 6),
            "sparsity/achieved": round(self.masks.achieved_sparsity(), 6),
        }

    def bind(self, model) -> None:
        if self.masks is None:
            self.masks = MaskSet.for_model(
                model, targets=self.config.targets, ignore=self.config.ignore, selection=self.config.selection
            )
        else:
            self.masks.rebind(model)

    def _restore(self, args, state) -> None:
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if not saved:
            raise ValueError(
                f"resuming at step {state.global_step}, but the checkpoint's trainer_state.json has no "
                f"{type(self).__name__} state; was it trained with a SparsityCallback?"
            )
        attributes = saved.get("attributes", {})
        self.round = int(attributes.get("round", 0))
        self.step = int(attributes.get("step", state.global_step))
        self.method.load_state_dict(attributes.get("method_state", {}))
        if not attributes.get("has_masks", False):
            self.masks.clear()
            return
        candidates = [self.resume_dir]
        if isinstance(getattr(args, "resume_from_checkpoint", None), str):
            candidates.append(args.resume_from_checkpoint)
        candidates.append(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"))
        for folder in candidates:
            if folder and os.path.isfile(os.path.join(folder, MASKS_FILE)):
                self.masks.load(os.path.join(folder, MASKS_FILE))
                return
        raise FileNotFoundError(
            f"resuming at step {state.global_step} needs {MASKS_FILE}, not found in "
            f"{[c for c in candidates if c]}; pass the checkpoint folder as resume_from_checkpoint"
        )

    # -- events ----------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        if self.method.num_rounds > 1 and not self.rounds_driver:
            raise ValueError(
                f"method {self.config.method!r} trains in {self.method.num_rounds} rounds; run it with "
                "SparseTrainer (a stock Trainer runs one round), or set skip_dense_phase=True when the model "
                "is already fine-tuned"
            )
        placement = distributed.placement_for(model)
        with distributed.bind_view(placement):
            self.bind(model)
        self.masks.placement = None
        if placement is not None:
            placement.attach(self.masks)
            if not placement.grads_before_step and self._overrides("before_optimizer_step"):
                raise ValueError(
                    f"method {self.config.method!r} reads dense gradients before the optimizer step; under "
                    f"{placement.name} the engine steps inside backward and leaves none; use DDP or FSDP"
                )
        with distributed.mask_update(self.masks):
            self.method.setup(self.context(args, state, model, optimizer, train_dataloader))
            if state.global_step > 0:
                self._restore(args, state)
            else:
                self.step = 0
                self.method.on_round_begin(self.context(args, state, model, optimizer, train_dataloader))
        self.masks.apply(optimizer)
        self._applied_version = self.masks.version

    def _overrides(self, event: str) -> bool:
        """Whether the method acts on `event`: sharded weights are gathered only for events that can use them."""
        return getattr(type(self.method), event) is not getattr(SparsityMethod, event)

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._scale_before = distributed.loss_scale(optimizer)
        if self._overrides("before_optimizer_step"):
            distributed.unscale_gradients(optimizer, args)
            with distributed.mask_update(self.masks, grads=True):
                self.method.before_optimizer_step(
                    self.context(args, state, model, optimizer, kwargs.get("train_dataloader"))
                )
        self.masks.apply_to_grads()

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not distributed.step_was_skipped(optimizer, self._scale_before):
            self.step += 1
            with distributed.mask_update(self.masks, full=self._overrides("after_optimizer_step")):
                self.method.after_optimizer_step(
                    self.context(args, state, model, optimizer, kwargs.get("train_dataloader"))
                )
        # Pruned weights and their optimizer state are zeroed here. With an elementwise optimizer they are
        # already zero (their gradients were masked), so the pass runs only when masks changed: it is most
        # of the cost of mask upkeep on a memory-bound CPU step.
        if (self.masks.version != self._applied_version or self.masks.placement is not None
                or not preserves_zeros(optimizer)):
            self.masks.apply(optimizer)
            self._applied_version = self.masks.version

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        with distributed.mask_update(self.masks, full=self._overrides("on_round_end")):
            self.method.on_round_end(self.context(args, state, model, optimizer, kwargs.get("train_dataloader")))

    def on_save(self, args, state, control, **kwargs):
        if self.masks is None or self.masks.is_dense or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if os.path.isdir(folder):
            self.masks.save(os.path.join(folder, MASKS_FILE))
        else:
            logger.warning("checkpoint folder %s not found; masks not saved with it", folder)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "sparsity/achieved" in logs:
            return
        extra = self.sparsity_logs()
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)
