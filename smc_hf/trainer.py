"""`SparseTrainer`: a drop-in `Trainer` that installs `SparsityCallback` and runs multi-round methods.

Nothing of the Trainer's loop is copied: rounds are successive calls of the public `train()`, each with a
fresh optimizer and LR schedule, as the benchmark's after-training methods and LTH prescribe.
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

from transformers import Seq2SeqTrainer, Trainer
from transformers.trainer_utils import get_last_checkpoint

from .best_model import BestAtSparsityCallback
from .callbacks import SparsityCallback
from .checkpoint import load_masks, load_weights, write_sparse_artifacts
from .config import SparsityConfig
from .report import SparsityReport, sparsity_report

ROUND_FILE = "sparsity_round.json"


class SparseTrainerMixin:
    """The sparse additions, shared by `SparseTrainer` and `SparseSeq2SeqTrainer`."""

    def __init__(self, *args, sparsity_config: Optional[SparsityConfig] = None, **kwargs):
        super().__init__(*args, **kwargs)
        existing = [cb for cb in self.callback_handler.callbacks if isinstance(cb, SparsityCallback)]
        if existing and sparsity_config is not None:
            raise ValueError("pass either sparsity_config or a SparsityCallback, not both")
        callback = existing[0] if existing else SparsityCallback(sparsity_config)
        if existing:
            self.callback_handler.callbacks.remove(callback)
        # First in line, so loggers called after it see the sparsity keys it adds.
        self.callback_handler.callbacks.insert(0, callback)
        self.add_callback(BestAtSparsityCallback(callback))

    @property
    def sparsity_callback(self) -> SparsityCallback:
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, SparsityCallback))

    @property
    def sparsity_config(self) -> SparsityConfig:
        return self.sparsity_callback.config

    def sparsity_report(self) -> SparsityReport:
        callback = self.sparsity_callback
        return sparsity_report(self.model, masks=callback.masks, config=callback.config)

    def log(self, logs: dict, *args, **kwargs) -> None:
        # A new dict: `evaluate()` returns the one it logs, and its metrics should stay the model's own.
        logs = {**logs, **self.sparsity_callback.sparsity_logs()}
        if self.sparsity_callback.method.num_rounds > 1:
            logs["sparsity/round"] = self.sparsity_callback.round
        super().log(logs, *args, **kwargs)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=_internal_call)
        callback = self.sparsity_callback
        if _internal_call or callback.masks is None or not self.args.should_save:
            return
        write_sparse_artifacts(self.model, output_dir or self.args.output_dir, callback.masks, callback.config)

    # -- rounds ----------------------------------------------------------------------------------------
    def _round_dir(self, base: str, round_idx: int, rounds: int) -> str:
        return base if round_idx == rounds - 1 else os.path.join(base, f"round-{round_idx}")

    def _completed_rounds(self, base: str, rounds: int) -> int:
        done = 0
        while done < rounds - 1 and os.path.isfile(os.path.join(base, f"round-{done}", ROUND_FILE)):
            done += 1
        return done

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        callback = self.sparsity_callback
        callback.rounds_driver = True
        rounds = callback.method.num_rounds
        if rounds == 1:
            if isinstance(resume_from_checkpoint, str):
                callback.resume_dir = resume_from_checkpoint
            return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        base, user_resume_arg = self.args.output_dir, self.args.resume_from_checkpoint
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
                        resume = get_last_checkpoint(folder) if os.path.isdir(folder) else None
                    if resume is None and round_idx > 0:
                        self._load_round(self._round_dir(base, round_idx - 1, rounds))
                # A callback re-created by `restore_callback_states_from_checkpoint` finds the folder here.
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
        callback = self.sparsity_callback
        self.save_model(folder)
        if self.args.should_save:
            with open(os.path.join(folder, ROUND_FILE), "w") as f:
                json.dump({"round": round_idx, "method_state": callback.method.state_dict()}, f, indent=2)

    def _load_round(self, folder: str) -> None:
        """Start a round from the saved end of the previous one (resuming a multi-round run)."""
        callback = self.sparsity_callback
        load_weights(self.model, folder)
        with open(os.path.join(folder, ROUND_FILE)) as f:
            callback.method.load_state_dict(json.load(f)["method_state"])
        callback.bind(self.model)
        if load_masks(folder, callback.masks) is None:
            callback.masks.clear()


class SparseTrainer(SparseTrainerMixin, Trainer):
    """`Trainer` with `sparsity_config=`; everything else is the stock Trainer."""


class SparseSeq2SeqTrainer(SparseTrainerMixin, Seq2SeqTrainer):
    """`Seq2SeqTrainer` with `sparsity_config=` (translation: generation and BLEU in evaluation)."""
