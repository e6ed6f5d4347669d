"""`SparsityMethod`: an algorithm as a composition of criterion x distribution x schedule.

The callback asks a method, at each Trainer event it declares (`events`), whether and how to change masks;
the method answers by calling `prune_to`, which scores (criteria.py), allocates (allocation.py) and sets the
masks on the `MaskSet`. Methods only decide: the callback (or `prune_model`) applies the masks to weights,
gradients and optimizer state once per event, through the `MaskSet`, on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from ..core import owl  # noqa: F401  (registers the 'owl' distribution beside uniform, global and erk)
from ..core.allocation import allocate
from ..core.context import PruneContext
from ..core.criteria import CRITERIA
from ..core.patterns import check_shape, input_dims, nm_keep_mask
from .registry import METHODS


@dataclass(frozen=True)
class Legend:
    """How tables and figures show a method: the paper's legend name, its rank in the paper's legend, and a
    fixed colour and marker, so a method looks the same in every figure."""

    name: str
    rank: int
    colour: str
    marker: str


#: The events a method may act on besides `on_round_begin` (which always runs, once per round). The callback
#: calls only those a method lists in `events`, and gathers sharded weights only for them.
STEP_EVENTS = ("before_optimizer_step", "after_optimizer_step", "on_round_end")


class SparsityMethod:
    name: ClassVar[str] = ""
    #: Which of `STEP_EVENTS` the method acts on; a class that overrides one of them must list it.
    events: ClassVar[frozenset[str]] = frozenset()
    #: Skip scoring when the masks already prune as many weights as a target asks: for criteria too costly to
    #: rerun for nothing (oBERT's Fisher pass). Without it a repeated target rescores and keeps the same masks.
    skip_reached_targets: ClassVar[bool] = False
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
    #: Whether the method prunes to `config.sparsity` (not `dense`, which prunes nothing, nor `fixed`, which keeps
    #: the mask it finds): then a report's overall target is `config.sparsity`.
    prunes_to_target: ClassVar[bool] = True
    #: Whether the method ever masks weights (all but `dense`): only then must the selection be non-empty.
    masks_weights: ClassVar[bool] = True
    #: Scores streaming pruning computes shard by shard ("magnitude" or "random"); None: the model must be in memory.
    streaming_criterion: ClassVar[Optional[str]] = None
    #: Initial masks a spec may name after a colon (`rigl:snip`); empty: the method takes none.
    initial_masks: ClassVar[tuple[str, ...]] = ()
    #: The method's legend in tables and figures (None: `name (Timing)`, after the paper's methods) and the
    #: legends of its `name:initial_mask` specs.
    legend: ClassVar[Optional[Legend]] = None
    initial_mask_legends: ClassVar[dict[str, Legend]] = {}
    #: Whether an N:M `pattern` can shape the method's masks: not for methods whose per-layer sparsity changes
    #: over training (`pattern_conflict` says how, for the error).
    supports_pattern: ClassVar[bool] = True
    pattern_conflict: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        unknown = sorted(set(cls.events) - set(STEP_EVENTS))
        overridden = [e for e in STEP_EVENTS if getattr(cls, e) is not getattr(SparsityMethod, e)]
        undeclared = [e for e in overridden if e not in cls.events]
        if unknown or undeclared:
            raise TypeError(
                f"{cls.__name__}.events = {sorted(cls.events)}: "
                + (f"{unknown} are not events (they are {', '.join(STEP_EVENTS)}); " if unknown else "")
                + (f"it overrides {undeclared} without listing them, so the callback would never call them; "
                   f"declare events = frozenset({sorted(set(cls.events) | set(undeclared))})" if undeclared else "")
            )

    def __init__(self, config):
        self.config = config
        #: None with an N:M pattern: the pattern, not a distribution, says how many weights each layer keeps.
        self.distribution = None if config.pattern else (config.distribution or self.default_distribution)
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
        self.check_pattern(ctx)

    def check_pattern(self, ctx: PruneContext) -> dict[str, int]:
        """The input dimension of every selected weight for the config's N:M pattern ({} without one); an error
        naming the layer when one cannot hold it, before any training or scoring."""
        pattern = self.config.nm_pattern
        if pattern is None:
            return {}
        dims = input_dims(ctx.model, ctx.masks.names)
        for name, dim in dims.items():
            check_shape(ctx.masks.shapes[name], pattern, dim, name)
        return dims

    def on_round_begin(self, ctx: PruneContext) -> None:
        """Before the round's first step (before-training methods prune here)."""

    def before_optimizer_step(self, ctx: PruneContext) -> None:
        """Dense gradients are available (not yet masked)."""

    def after_optimizer_step(self, ctx: PruneContext) -> None:
        """After a non-skipped optimizer step; `ctx.step` counts it."""

    def on_round_end(self, ctx: PruneContext) -> None:
        """After the round's last step."""

    def one_shot(self, ctx: PruneContext) -> None:
        capable = [n for n in METHODS.names() if METHODS.get(n).one_shot_capable and METHODS.get(n).prunes_to_target]
        raise ValueError(
            f"method {self.name!r} needs training and cannot run in prune_model; one-shot methods: {', '.join(capable)}"
        )

    # -- the shared mechanics --------------------------------------------------------------------------
    def criterion_options(self, criterion: str) -> dict[str, Any]:
        """The keyword options `criterion` is called with, from this method's config."""
        if criterion == "snip":
            return {"batches": self.config.snip_batches, "train_mode": self.config.snip_train_mode}
        return {}

    def distribution_options(self) -> dict[str, Any]:
        """The keyword options the distributions read from this method's config (each takes its own)."""
        c = self.config
        return {"erk_power_scale": c.erk_power_scale, "owl_threshold_m": c.owl_threshold_m,
                "owl_lambda": c.owl_lambda}

    def prune_to(self, ctx: PruneContext, sparsity: float, criterion: str | None = None) -> None:
        """Set masks that prune the lowest-scored weights down to `sparsity` (scored by `criterion`, default the
        method's own), spread by the distribution, or with the config's N:M pattern the N best of every M
        consecutive weights of each layer (sparsity 1 - N/M); the caller applies them."""
        if self.skip_reached_targets and round(sparsity * ctx.masks.numel()) <= ctx.masks.pruned():
            self.current_sparsity = max(self.current_sparsity, sparsity)
            return
        dims = self.check_pattern(ctx)
        name = criterion or self.criterion
        scores = CRITERIA.get(name)(ctx, **self.criterion_options(name))
        compensate = getattr(scores, "compensate", None)
        if dims:  # the pattern fixes every layer at 1 - N/M: no distribution
            pattern = self.config.nm_pattern
            masks = {n: nm_keep_mask(s, pattern, dims[n], n) for n, s in scores.items()}
        else:
            masks = allocate(scores, sparsity, self.distribution, input_dims=input_dims(ctx.model, ctx.masks.names),
                             **self.distribution_options())
        del scores
        if compensate is not None:
            compensate(masks)
            del compensate
        ctx.masks.update(masks)
        self.current_sparsity = sparsity

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state needed to resume (saved in trainer_state.json, no pickle)."""
        return {"current_sparsity": self.current_sparsity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current_sparsity = float(state.get("current_sparsity", 0.0))
