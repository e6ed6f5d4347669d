"""`SparsityMethod`: an algorithm as a composition of criterion x distribution x schedule.

The callback asks a method, at each Trainer event, whether and how to change masks; the method answers
by calling `prune_to`, which scores (criteria.py), allocates (allocation.py) and hands the masks to the
`MaskSet`, the only object that touches weights.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..allocation import allocate
from ..context import PruneContext
from ..criteria import CRITERIA


class SparsityMethod:
    name: ClassVar[str] = ""
    #: "before", "during" or "after" training: when the benchmark's legend says the mask is found.
    timing: ClassVar[str] = "before"
    criterion: ClassVar[str] = "magnitude"
    default_distribution: ClassVar[str] = "global"
    #: Whether `prune_model` can run the method without training.
    one_shot_capable: ClassVar[bool] = False
    #: Whether scoring needs calibration batches (gradients), so one-shot use must be given data.
    needs_data: ClassVar[bool] = False
    #: Round 0 is a dense fine-tuning and the method can start from one already done (`skip_dense_phase`):
    #: a sweep runs the dense fine-tuning once per task and seed and starts these methods from its output.
    starts_from_dense_finetune: ClassVar[bool] = False
    #: Round 0 is a dense fine-tuning and round k ends with the ticket of the run's k-th sparsity (the one
    #: a run with k + 1 rounds ends at): one run to the highest sparsity yields every lower one (LTH).
    rounds_are_tickets: ClassVar[bool] = False

    def __init__(self, config):
        self.config = config
        self.distribution = config.distribution or self.default_distribution
        self.current_sparsity = 0.0

    @classmethod
    def validate(cls, config) -> None:
        """Reject option combinations that make no sense for this method (called by SparsityConfig)."""
        if config.sparsity <= 0.0:
            raise ValueError(f"method {cls.name!r} needs sparsity > 0; use method 'dense' for a dense run")

    @property
    def num_rounds(self) -> int:
        """Training rounds inside one `SparseTrainer.train()` call (2 for after-training methods)."""
        return 1

    # -- events ----------------------------------------------------------------------------------------
    def setup(self, ctx: PruneContext) -> None:
        """Resolve schedules against the round's length; raise before the first step if they do not fit."""

    def on_round_begin(self, ctx: PruneContext) -> None:
        """Before the round's first step (before-training methods prune here)."""

    def before_optimizer_step(self, ctx: PruneContext) -> None:
        """Dense gradients are available (not yet masked)."""

    def after_optimizer_step(self, ctx: PruneContext) -> None:
        """After a non-skipped optimizer step; `ctx.step` counts it."""

    def on_round_end(self, ctx: PruneContext) -> None:
        """After the round's last step."""

    def one_shot(self, ctx: PruneContext) -> None:
        raise ValueError(
            f"method {self.name!r} needs training and cannot run in prune_model; "
            "one-shot methods: omp, random, omp_after, random_after, snip, obert"
        )

    # -- the shared mechanics --------------------------------------------------------------------------
    def prune_to(
        self, ctx: PruneContext, sparsity: float, criterion: str | None = None, scores: dict | None = None
    ) -> None:
        """Mask the lowest-scored weights down to `sparsity`. `scores` stands in for the criterion when the method
        computed them itself (e.g. with options from its config, such as SNIP's number of batches)."""
        if scores is None:
            scores = CRITERIA.get(criterion or self.criterion)(ctx)
        masks = allocate(scores, sparsity, self.distribution, erk_power_scale=self.config.erk_power_scale)
        del scores
        ctx.masks.update(masks)
        ctx.masks.apply(ctx.optimizer)
        self.current_sparsity = sparsity

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state needed to resume (saved in trainer_state.json, no pickle)."""
        return {"current_sparsity": self.current_sparsity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current_sparsity = float(state.get("current_sparsity", 0.0))
