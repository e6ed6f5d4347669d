"""`SparseTrainer`: a drop-in `Trainer` that installs `SparsityCallback` and runs multi-round methods.

Nothing of the Trainer's loop is copied: rounds are successive calls of the public `train()`, each with a
fresh optimizer and LR schedule, as the benchmark's after-training methods and LTH prescribe.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Optional

from transformers import Seq2SeqTrainer, Trainer
from ..config import SparsityConfig
from ..core.masks import load_masks
from ..core.report import SparsityReport, sparsity_report
from ..core.rng import capture_rng_state, restore_rng_state
from ..core.selection import select_parameters
from ..io.atomic import write_json
from ..io.folders import TRAINER_STATE_FILE, check_safetensors_files, last_complete_checkpoint, load_weights
from ..pruning.sparse_folder import write_sparse_artifacts
from .best_model import BestAtSparsityCallback
from .callbacks import SparsityCallback

logger = logging.getLogger(__name__)

ROUND_FILE = "sparsity_round.json"


class SparseTrainerMixin:
    """The sparse additions, shared by `SparseTrainer` and `SparseSeq2SeqTrainer`.

    Without a sparsity configuration (or with method `dense`) it is the stock Trainer: same callback list,
    logs, metrics, events, errors and files, on any model.
    """

    def __init__(self, *args, sparsity_config: Optional[SparsityConfig] = None, **kwargs):
        super().__init__(*args, **kwargs)
        existing = [cb for cb in self.callback_handler.callbacks if isinstance(cb, SparsityCallback)]
        if existing and sparsity_config is not None:
            raise ValueError("pass either sparsity_config or a SparsityCallback, not both")
        callback = existing[0] if existing else SparsityCallback(sparsity_config)
        #: A dense run's callback, kept out of the Trainer's list (which then is the stock Trainer's, and so are
        #: the `stateful_callbacks` of its checkpoints); it answers `sparsity_config` and `sparsity_report()`.
        self._detached_callback: Optional[SparsityCallback] = None
        if existing or callback.prunes:
            self._install(callback)
        else:
            self._detached_callback = callback

    def _install(self, callback: SparsityCallback) -> None:
        """First in line, so loggers called after it see the sparsity keys it adds; the best-model guard
        (one, bound to this callback) after the Trainer's own callbacks."""
        callback.attach(self)
        self._detached_callback = None
        handler = self.callback_handler
        handler.callbacks[:] = [cb for cb in handler.callbacks if not isinstance(cb, BestAtSparsityCallback)]
        super().add_callback(BestAtSparsityCallback(callback))

    def _installed_callback(self) -> Optional[SparsityCallback]:
        return next((cb for cb in self.callback_handler.callbacks if isinstance(cb, SparsityCallback)), None)

    @property
    def sparsity_callback(self) -> Optional[SparsityCallback]:
        """The SparsityCallback: the installed one, else a dense run's detached one; None once removed
        (`pop_callback`), after which this is a Trainer."""
        return self._installed_callback() or self._detached_callback

    @property
    def sparsity_config(self) -> Optional[SparsityConfig]:
        callback = self.sparsity_callback
        return callback.config if callback is not None else None

    def sparsity_report(self) -> SparsityReport:
        callback = self.sparsity_callback
        if callback is None:
            raise ValueError("this trainer has no SparsityCallback (it was removed); nothing to report")
        if callback is self._detached_callback:
            callback.bind_for_report(self.model)
        if callback.masks is None:
            config = callback.config
            selected = select_parameters(self.model, config.targets, config.ignore, config.selection, required=False)
            if not selected:
                return SparsityReport([], 0.0)
        return sparsity_report(self.model, masks=callback.masks, config=callback.config)

    def add_callback(self, callback) -> None:
        """As `Trainer.add_callback`; a SparsityCallback goes first, where loggers after it see its keys."""
        if isinstance(callback, SparsityCallback) or (isinstance(callback, type) and issubclass(callback, SparsityCallback)):
            self._install(callback() if isinstance(callback, type) else callback)
        else:
            super().add_callback(callback)

    def log(self, logs: dict, *args, **kwargs) -> None:
        # The same dict, so keys the Trainer adds in place (epoch, tokens seen) reach the returned metrics.
        # The callback adds the sparsity keys; a copy re-created from a checkpoint's state
        # (restore_callback_states_from_checkpoint) is appended last, so it is put back first here.
        callbacks = self.callback_handler.callbacks
        callback = self._installed_callback()
        if callback is not None and callbacks[0] is not callback:
            callback.attach(self)
        super().log(logs, *args, **kwargs)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """Also writes the masks and the config block, before anything else reads the folder: checkpoints get
        them before trainer_state.json (which marks a checkpoint complete) and `push_to_hub` before its upload
        (both call this with `_internal_call=True`)."""
        callback = self.sparsity_callback
        if callback is None or callback.masks is None or not callback.prunes:
            return super().save_model(output_dir, _internal_call=_internal_call)
        # Saved as an internal call, so the Trainer does not upload before the sparse files exist; the user's
        # save then pushes here, as Trainer.save_model would.
        super().save_model(output_dir, _internal_call=True)
        if self.args.should_save:
            write_sparse_artifacts(self.model, output_dir or self.args.output_dir, callback.masks, callback.config)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    # -- rounds ----------------------------------------------------------------------------------------
    def _round_dir(self, base: str, round_idx: int, rounds: int) -> str:
        return base if round_idx == rounds - 1 else os.path.join(base, f"round-{round_idx}")

    def _completed_rounds(self, base: str, rounds: int) -> int:
        done = 0
        while done < rounds - 1 and os.path.isfile(os.path.join(base, f"round-{done}", ROUND_FILE)):
            done += 1
        return done

    @staticmethod
    def _last_checkpoint(folder: str) -> Optional[str]:
        """The newest complete checkpoint of `folder`, passing over (with a warning) those a kill left half-written."""
        found, skipped = last_complete_checkpoint(folder)
        if skipped:
            logger.warning("skipping incomplete checkpoints (no valid %s): %s", TRAINER_STATE_FILE, skipped)
        return found

    def _resolve_resume(self, resume, folder: str):
        """`True` -> the newest complete checkpoint of `folder`; a folder whose checkpoints are all incomplete
        starts afresh (None); one with none at all is left to the Trainer's own error."""
        if resume is True:
            found = self._last_checkpoint(folder)
            if found is None and last_complete_checkpoint(folder)[1]:
                logger.warning("no complete checkpoint in %s; training starts from the beginning", folder)
                return None
            resume = found if found is not None else True
        if isinstance(resume, str) and os.path.isdir(resume):  # a missing folder: the Trainer's own error
            check_safetensors_files(resume)
        return resume

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        callback = self._installed_callback()
        if callback is None:
            if self._detached_callback is not None:  # dense: the Trainer's run, with a robust resume
                resume_from_checkpoint = self._resolve_resume(resume_from_checkpoint, self.args.output_dir)
            return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        callback.rounds_driver = True
        rounds = callback.method.num_rounds
        base, user_resume_arg = self.args.output_dir, self.args.resume_from_checkpoint
        if rounds == 1:
            resume = self._resolve_resume(resume_from_checkpoint, base)
            callback.resume_dir = resume if isinstance(resume, str) else None
            try:
                # A callback re-created by `restore_callback_states_from_checkpoint` finds the folder here.
                self.args.resume_from_checkpoint = callback.resume_dir
                return super().train(resume, trial, ignore_keys_for_eval, **kwargs)
            finally:
                self.args.resume_from_checkpoint = user_resume_arg
        first = 0
        if resume_from_checkpoint:
            first = self._completed_rounds(base, rounds)
            if isinstance(resume_from_checkpoint, str):
                match = re.search(r"round-(\d+)$", os.path.dirname(os.path.abspath(resume_from_checkpoint)))
                first = int(match.group(1)) if match else rounds - 1
        output = None
        try:
            for round_idx in range(first, rounds):
                folder = self._round_dir(base, round_idx, rounds)
                self.args.output_dir = folder
                resume = None
                if round_idx == first and resume_from_checkpoint:
                    resume = resume_from_checkpoint
                    if resume is True:
                        resume = self._last_checkpoint(folder)
                    elif isinstance(resume, str) and os.path.isdir(resume):
                        check_safetensors_files(resume)
                    if resume is None and round_idx > 0:
                        self._load_round(self._round_dir(base, round_idx - 1, rounds))
                self.args.resume_from_checkpoint = resume
                callback = self.sparsity_callback
                callback.round, callback.resume_dir = round_idx, resume
                if round_idx > first:
                    self.optimizer, self.lr_scheduler = None, None
                output = super().train(resume, trial, ignore_keys_for_eval, **kwargs)
                if round_idx < rounds - 1:
                    self._finish_round(folder, round_idx)
        finally:
            self.args.output_dir, self.args.resume_from_checkpoint = base, user_resume_arg
        return output

    def _finish_round(self, folder: str, round_idx: int) -> None:
        """Save the round's end; the round file, written last and atomically, marks the round complete. It
        carries the RNG state, so a run resumed at this boundary draws what an uninterrupted one draws."""
        callback = self.sparsity_callback
        self.save_model(folder)
        if self.args.should_save:
            record = {"round": round_idx, "method_state": callback.method.state_dict(), "rng": capture_rng_state()}
            path = os.path.join(folder, ROUND_FILE)
            write_json(path, record, indent=2)

    def _load_round(self, folder: str) -> None:
        """Start a round from the saved end of the previous one (resuming a multi-round run)."""
        callback = self.sparsity_callback
        check_safetensors_files(folder)
        load_weights(self.model, folder)
        path = os.path.join(folder, ROUND_FILE)
        with open(path) as f:
            try:
                record = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err}); delete the folder {folder} to redo the round") from None
        callback.method.load_state_dict(record["method_state"])
        if "rng" in record:
            restore_rng_state(record["rng"])
        callback.bind(self.model)
        if callback.masks is not None and load_masks(folder, callback.masks) is None:
            callback.masks.clear()


class SparseTrainer(SparseTrainerMixin, Trainer):
    """`Trainer` with `sparsity_config=`; everything else is the stock Trainer."""


class SparseSeq2SeqTrainer(SparseTrainerMixin, Seq2SeqTrainer):
    """`Seq2SeqTrainer` with `sparsity_config=` (translation: generation and BLEU in evaluation)."""
