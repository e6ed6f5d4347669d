"""`SparsityCallback`: the only place that reacts to Trainer events.

Order inside one optimizer step (transformers >= 4.45):
clip -> on_pre_optimizer_step (method sees dense grads, then grads are masked) -> optimizer.step() ->
on_optimizer_step (method may change masks; weights and optimizer state are masked) -> scheduler.
Methods only change masks (and, for some, weights); this callback applies the masks, once per event, through
the `MaskSet` and its placement, so every backend gets the same treatment. It calls a method only for the
events the method declares (`SparsityMethod.events`), and gathers sharded weights only for those.
Works with a stock `Trainer` (install it with `attach(trainer)`, so loggers see its keys); `SparseTrainer`
adds multi-round methods and writes the sparse files with every save and push.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..config import SparsityConfig
from ..core.context import PruneContext
from ..core.mask_names import model_prefix
from ..core.masks import MaskSet
from ..core.selection import select_parameters
from ..integrations import distributed
from ..io.mask_file import MASKS_FILE
from ..methods import build_method
from ..pruning.sparse_folder import write_sparse_artifacts

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
        #: Set by SparseTrainer, which runs the rounds of multi-round methods and writes the sparse files itself.
        self.rounds_driver = False
        #: `masks.version` when weights and optimizer state were last masked.
        self._applied_version = -1
        #: Checkpoint folder to read masks from when resuming (SparseTrainer resolves it).
        self.resume_dir: Optional[str] = None
        #: The fp16 loss scale before the current optimizer step, to recognise a skipped step by its back-off.
        self._scale_before: Optional[float] = None
        #: Set by `attach` (and SparseTrainer): placed before the reporting integrations.
        self._placed_first = False
        #: The dict the last `on_log` added sparsity keys to, and those keys (taken back out of returned metrics).
        self._annotated: Optional[tuple[dict, list[str]]] = None

    def attach(self, trainer) -> "SparsityCallback":
        """Install this callback first in `trainer`'s list, replacing any other SparsityCallback.

        `Trainer(callbacks=[...])` places user callbacks after the reporting integrations (TensorBoard,
        W&B, ...), which then log before the sparsity keys exist; first in line, every logger sees them.
        """
        handler = trainer.callback_handler
        handler.callbacks[:] = [self] + [cb for cb in handler.callbacks if not isinstance(cb, SparsityCallback)]
        self._placed_first = True
        return self

    @property
    def prunes(self) -> bool:
        """Whether the method can prune (all but `dense`): only then must the selection be non-empty."""
        return self.config.method_class.masks_weights

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
        """The keys added to every log; none for a dense run, which logs exactly what a Trainer logs."""
        if self.masks is None or not self.prunes:
            return {}
        logs = {
            "sparsity/target": round(self.target_sparsity(), 6),
            "sparsity/achieved": round(self.masks.achieved_sparsity(), 6),
        }
        if self.rounds_driver and self.method.num_rounds > 1:
            logs["sparsity/round"] = self.round
        return logs

    def bind_for_report(self, model) -> None:
        """Bind the masks to `model` for a report only (a dense run's callback, which the Trainer never calls):
        through the backend's placement, so sharded weights count at full size, without training's grad hooks."""
        placement = distributed.placement_for(model)
        with distributed.bind_view(placement):
            self.bind(model)
        if self.masks is not None:
            self.masks.placement = placement

    def bind(self, model) -> None:
        """Select the prunable weights of `model`; a dense run on a model with none (a Conv2d net) keeps no masks."""
        if self.masks is None:
            params = select_parameters(model, targets=self.config.targets, ignore=self.config.ignore,
                                       selection=self.config.selection, required=self.prunes)
            self.masks = MaskSet(params, model_prefix(model)) if params else None
        else:
            self.masks.rebind(model)

    def _restore(self, args, state) -> None:
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        if not saved and not self.prunes:
            return  # a dense run resumes from a stock Trainer's checkpoint as the Trainer would
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
            if self.masks is not None:
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
        reporters = [args.report_to] if isinstance(args.report_to, str) else list(args.report_to or [])
        reporters = [r for r in reporters if r != "none"]
        if reporters and not (self._placed_first or self.rounds_driver):
            logger.warning(
                "SparsityCallback was added after the reporting integrations %s, which will not see "
                "sparsity/target and sparsity/achieved; install it with SparsityCallback(config).attach(trainer)",
                reporters,
            )
        placement = distributed.placement_for(model)
        with distributed.bind_view(placement):
            self.bind(model)
        if self.masks is None:  # dense, nothing selected: the Trainer runs as it would without us
            self.method.setup(self.context(args, state, model, optimizer, train_dataloader))
            if state.global_step > 0:
                self._restore(args, state)
            return
        self.masks.placement = None
        if placement is not None:
            placement.attach(self.masks)
            if not placement.grads_before_step and self._acts_on("before_optimizer_step"):
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
        self.masks.apply(optimizer)  # always: a resumed or rewound model is masked before its first step
        self._applied_version = self.masks.version

    def _acts_on(self, event: str) -> bool:
        """Whether the method declared `event`: only then is it called, with sharded weights gathered."""
        return event in self.method.events

    def _apply_changed(self, optimizer, grads: bool = False) -> bool:
        """Apply masks that changed since they were last applied (weights, optimizer state and, with `grads`,
        gradients); returns whether they had changed."""
        if self.masks.version == self._applied_version:
            return False
        self.masks.apply(optimizer)
        if grads:
            self.masks.apply_to_grads()
        self._applied_version = self.masks.version
        return True

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.masks is None:
            return
        self._scale_before = distributed.loss_scale(optimizer)
        if self._acts_on("before_optimizer_step"):
            distributed.unscale_gradients(optimizer, args)
            with distributed.mask_update(self.masks, grads=True):
                self.method.before_optimizer_step(
                    self.context(args, state, model, optimizer, kwargs.get("train_dataloader"))
                )
        self.masks.apply_to_grads()

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.masks is None:
            return
        if not distributed.step_was_skipped(optimizer, self._scale_before):
            self.step += 1
            if self._acts_on("after_optimizer_step"):
                with distributed.mask_update(self.masks):
                    self.method.after_optimizer_step(
                        self.context(args, state, model, optimizer, kwargs.get("train_dataloader"))
                    )
        # Pruned weights and their optimizer state are zeroed here. With an elementwise optimizer they are
        # already zero on every backend (their gradients were masked), so the pass runs only when masks
        # changed: it is most of the cost of mask upkeep on a memory-bound CPU step.
        if not self._apply_changed(optimizer, grads=True) and not distributed.step_keeps_pruned_zero(optimizer):
            self.masks.apply(optimizer)

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._take_back()  # the last log of train() is its metrics
        if self.masks is None:
            return
        if self._acts_on("on_round_end"):
            with distributed.mask_update(self.masks):
                self.method.on_round_end(self.context(args, state, model, optimizer, kwargs.get("train_dataloader")))
            self._apply_changed(optimizer)

    def on_save(self, args, state, control, **kwargs):
        """A stock Trainer's checkpoints get their masks here (SparseTrainer writes them with the weights)."""
        if self.masks is None or self.masks.is_dense or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if os.path.isdir(folder):
            self.masks.save(os.path.join(folder, MASKS_FILE))
        elif not self.rounds_driver:  # SparseTrainer saved them with the weights, wherever its run folder is
            logger.warning("checkpoint folder %s not found; masks not saved with it", folder)

    def on_push_begin(self, args, state, control, model=None, **kwargs):
        """Before an upload of `output_dir`: the masks go there (a checkpoint push copies only the Trainer's
        model files into it), and a checkpoint that lacks them gets the masks and the config block."""
        if self.masks is None or self.masks.is_dense or not state.is_world_process_zero:
            return
        self.masks.save(os.path.join(args.output_dir, MASKS_FILE))
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not self.rounds_driver and model is not None and os.path.isfile(os.path.join(folder, "config.json")):
            write_sparse_artifacts(model, folder, self.masks, self.config)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """The one place sparsity keys join a log: in the dict every later logger receives, and in log_history."""
        extra = self.sparsity_logs()
        if logs is None or not extra:
            return
        logs.update(extra)
        self._annotated = (logs, list(extra))
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._annotated is not None and self._annotated[0] is metrics:
            self._take_back()

    def _take_back(self) -> None:
        """Remove the keys from the dict `evaluate()`/`train()` return: metrics stay the model's own, and
        hyperparameter_search's default objective (the sum of the metrics) is not shifted by them."""
        if self._annotated is not None:
            logs, keys = self._annotated
            for key in keys:
                logs.pop(key, None)
            self._annotated = None
