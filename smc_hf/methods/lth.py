"""LTH / IMP with rewinding (Frankle & Carbin 2019; Frankle et al. 2020): train, prune, rewind, repeat."""

from __future__ import annotations

import math
import os

from accelerate import PartialState
from safetensors.torch import load_model, save_model

from ..core.context import PruneContext
from ..io.atomic import atomic_path
from ..io.safetensors_io import member_path
from .base import Legend, SparsityMethod
from .registry import METHODS

REWIND_FILE = "lth_rewind.safetensors"
#: How far a target may sit from the grid 1 - (1 - rate)^k and still mean round k (the paper prints 0.59 for 0.5904).
GRID_TOLERANCE = 0.005


def grid_sparsity(rate: float, k: int) -> float:
    return 1.0 - (1.0 - rate) ** k


def pruning_rounds(sparsity: float, rate: float) -> int:
    """The k with 1 - (1 - rate)^k nearest `sparsity`; an error naming the nearest grid points if it is not close."""
    exact = math.log(1.0 - sparsity) / math.log(1.0 - rate)
    lower, upper = max(math.floor(exact), 0), math.floor(exact) + 1
    k = min((lower, upper), key=lambda j: abs(grid_sparsity(rate, j) - sparsity))
    if k < 1 or abs(grid_sparsity(rate, k) - sparsity) > GRID_TOLERANCE:
        points = ", ".join(f"{grid_sparsity(rate, j):.4g} ({j} rounds)" for j in (lower, upper) if j >= 1)
        raise ValueError(
            f"lth reaches only the sparsities 1 - (1 - lth_rate)^k; {sparsity} is not within {GRID_TOLERANCE} of one "
            f"for lth_rate = {rate} (nearest: {points}); pick one of those or change lth_rate"
        )
    return k


@METHODS.register("lth", aliases=("imp",))
class LTH(SparsityMethod):
    """Round 0 trains dense. Each later round starts by pruning `lth_rate` of the remaining selected weights by
    global magnitude of the trained weights, then rewinds the whole model (head included, as in the paper) to the
    rewind point and trains again with a fresh optimizer and LR schedule; the last round trains the final ticket.

    Sparsity after pruning k is exactly 1 - (1 - lth_rate)^k of the selected weights (0.2, 0.36, 0.488, ...). The
    target must lie within 0.005 of that grid; the last pruning goes to the target itself, so 0.59 means four
    rounds of 20% with the fourth ending at 0.59 rather than 0.5904. `rewind_step` 0 rewinds to the weights the
    run started from (the paper); k > 0 to those after k optimizer steps of round 0 (late rewinding).
    The rewind weights are written once, as safetensors, to round 0's folder (`lth_rewind.safetensors`), and the
    state records that path relative to the run's folder, so a run resumed in any round (even after the folder
    was moved) rewinds to the same point. `lth_rewind=False` keeps training the pruned weights of the previous
    round instead (learning-rate rewinding only), as the release's ESM-1b protein LTH.
    """

    timing = "after"
    events = frozenset({"after_optimizer_step"})
    legend = Legend("LTH (After)", 1, "#d62728", "o")
    rounds_are_tickets = True
    supports_pattern = False
    pattern_conflict = "prunes a fraction of the remaining weights in each round"

    def __init__(self, config):
        super().__init__(config)
        self.prunings = pruning_rounds(config.sparsity, config.lth_rate)
        self.rewind_file = None

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        if config.skip_dense_phase:
            raise ValueError(
                "lth's round 0 is the dense training whose magnitudes choose the first pruning and whose start is "
                "the rewind point; skip_dense_phase does not apply (use omp_after on a fine-tuned model instead)"
            )
        if not config.lth_rewind and config.rewind_step:
            raise ValueError(
                f"rewind_step = {config.rewind_step} names a rewind point, but lth_rewind is off; drop one of them"
            )
        pruning_rounds(config.sparsity, config.lth_rate)

    @property
    def num_rounds(self) -> int:
        return self.prunings + 1

    def round_sparsity(self, round_idx: int) -> float:
        if round_idx >= self.prunings:
            return self.config.sparsity
        return grid_sparsity(self.config.lth_rate, round_idx)

    def setup(self, ctx: PruneContext) -> None:
        if ctx.round == 0 and self.config.rewind_step > ctx.max_steps:
            raise ValueError(
                f"rewind_step = {self.config.rewind_step} is past the end of round 0 ({ctx.max_steps} optimizer steps)"
            )

    def on_round_begin(self, ctx: PruneContext) -> None:
        if ctx.round == 0:
            if self.config.rewind_step == 0 and self.config.lth_rewind:
                self._save_rewind_point(ctx)
            return
        self.prune_to(ctx, self.round_sparsity(ctx.round))
        if self.config.lth_rewind:
            self._rewind(ctx)

    def after_optimizer_step(self, ctx: PruneContext) -> None:
        if self.config.lth_rewind and ctx.round == 0 and ctx.step == self.config.rewind_step:
            self._save_rewind_point(ctx)

    # -- the rewind point ----------------------------------------------------------------------------------
    def _run_dir(self, ctx: PruneContext) -> str:
        """The run's output folder: round k < last trains in `<run>/round-k`, the last round in `<run>` itself
        (`SparseTrainer`'s layout). The rewind file is recorded relative to it, so a moved run still resumes."""
        if not ctx.output_dir:
            raise ValueError("lth writes its rewind weights under the output directory; none was given")
        folder = os.path.abspath(ctx.output_dir)
        return folder if ctx.round >= self.num_rounds - 1 else os.path.dirname(folder)

    def _save_rewind_point(self, ctx: PruneContext) -> None:
        run_dir = self._run_dir(ctx)
        relative = os.path.relpath(os.path.join(os.path.abspath(ctx.output_dir), REWIND_FILE), run_dir)
        path = os.path.join(run_dir, relative)
        if getattr(ctx.args, "should_save", True):
            with atomic_path(path) as tmp:
                save_model(ctx.model, tmp, metadata={"format": "pt", "rewind_step": str(self.config.rewind_step)})
        PartialState().wait_for_everyone()
        self.rewind_file = relative.replace(os.sep, "/")

    def _rewind(self, ctx: PruneContext) -> None:
        run_dir = self._run_dir(ctx)
        path = None
        if self.rewind_file:
            path = member_path(run_dir, self.rewind_file, "lth state (rewind_file)", subfolders=True)
        if not path or not os.path.isfile(path):
            raise FileNotFoundError(
                f"lth: rewind weights not found at {path or os.path.join(run_dir, 'round-0', REWIND_FILE)}; they are "
                "written in round 0 (its output folder), which must be kept until the last round has started"
            )
        device = next(ctx.model.parameters()).device
        load_model(ctx.model, path, strict=True, device=str(device))  # dense: the callback masks it after the event

    # -- resume --------------------------------------------------------------------------------------------
    def state_dict(self):
        return {**super().state_dict(), "rewind_file": self.rewind_file}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.rewind_file = state.get("rewind_file")
        if self.rewind_file and os.path.isabs(self.rewind_file):
            # written by an older smc_hf as an absolute path: keep its place inside the run folder
            self.rewind_file = f"round-0/{REWIND_FILE}"
