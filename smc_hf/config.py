"""`SparsityConfig`: the single vocabulary of a sparse run, read by `HfArgumentParser`, validated on construction."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional


def _arg(default, help: str, alias: str | None = None, **kwargs):
    metadata = {"help": help}
    if alias:
        metadata["aliases"] = [alias]
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class SparsityConfig:
    """What to prune, how much, how to spread it over layers and when.

    Step fields (`begin_step`, `end_step`) count optimizer steps (gradient accumulation included). A value
    below 1 is a fraction of the run's total optimizer steps (`0.8` = 80% of training); a value of 1 or more
    is an absolute step. `None` takes the method's default. Sparsity always means the fraction of the
    *selected* weights that are zero; biases, norms, embeddings and task heads are not selected by default.
    """

    method: str = _arg("dense", "Sparse algorithm (see smc_hf.available_methods()).", "--sparsity_method")
    sparsity: float = _arg(0.0, "Target fraction of selected weights set to zero, in [0, 1).")
    distribution: Optional[str] = _arg(
        None, "How sparsity is spread over layers: uniform, global or erk (default: the method's).",
        "--sparsity_distribution",
    )
    targets: Optional[list[str]] = _arg(
        None, "Regexes over parameter names to prune instead of the default (the backbone's Linear weights).",
        "--sparsity_targets",
    )
    ignore: Optional[list[str]] = _arg(None, "Regexes over parameter names never to prune.", "--sparsity_ignore")
    selection: str = _arg(
        "default",
        "Named default selection when no targets are given: default (attention and feed-forward of the backbone) "
        "or release-embeddings-heads (also embeddings, pooler and task head, as the release's README commands).",
        "--sparsity_selection",
    )
    begin_step: Optional[float] = _arg(
        None, "First optimizer step of a gradual schedule (fraction of training if < 1).", "--sparsity_begin_step"
    )
    end_step: Optional[float] = _arg(
        None, "Last optimizer step of a gradual schedule (fraction of training if < 1).", "--sparsity_end_step"
    )
    update_every: Optional[int] = _arg(
        None, "Optimizer steps between mask updates, at its multiples (default: a sixth of training, the release's "
        "500 of 3000 on CSQA; tasks set the release's value).", "--sparsity_update_every",
    )
    exact_end: bool = _arg(
        True, "GMP, obert_gradual: a last update exactly at end_step reaches the target (False: the release's "
        "updates strictly before end_step, which stop at ~99% of it).", "--sparsity_exact_end",
    )
    mask_seed: Optional[int] = _arg(None, "Seed for random masks and calibration order (default: --seed).")
    skip_dense_phase: bool = _arg(
        False, "After-training methods: the model is already fine-tuned, so prune at once and re-train."
    )
    erk_power_scale: float = _arg(1.0, "ERK exponent (1.0 = Erdos-Renyi-Kernel as in RigL).")
    snip_batches: int = _arg(1, "SNIP: training batches whose |grad * weight| scores are summed.")
    rigl_init: str = _arg("omp", "RigL: initial mask from omp, snip or random.")
    drop_fraction: float = _arg(0.5, "RigL: initial fraction of active weights dropped per update (cosine-decayed).")
    drop_fraction_min: float = _arg(
        0.005, "RigL: the drop fraction the cosine decay reaches at end_step (the release's eta_min 0.005)."
    )
    lth_rate: float = _arg(0.2, "LTH/IMP: fraction of the remaining weights pruned per round.")
    rewind_step: int = _arg(0, "LTH/IMP: rewind to the weights after this many optimizer steps (0 = pre-trained).")
    lth_rewind: bool = _arg(
        True, "LTH/IMP: rewind after each pruning (False: keep training the pruned weights, learning-rate "
        "rewinding only, as the release's ESM-1b LTH)."
    )
    obert_num_grads: Optional[int] = _arg(
        None, "oBERT: gradient samples (batches) in the empirical Fisher (default: obert one full pass over the "
        "training data, as the release; obert_gradual 1024).",
    )
    obert_block_size: Optional[int] = _arg(
        None, "oBERT: consecutive weights per Fisher block (default: obert 1, the release's diagonal Fisher; "
        "obert_gradual 50).",
    )
    obert_damp: float = _arg(1e-7, "oBERT: Fisher damping.")
    obert_weight_update: Optional[bool] = _arg(
        None, "oBERT: move the kept weights by the OBS update when pruning (default: obert no, as the release; "
        "obert_gradual yes, as the oBERT paper).",
    )

    def __post_init__(self):
        from .allocation import DISTRIBUTIONS
        from .methods import METHODS

        self.method = METHODS.canonical(self.method)
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)):
            raise ValueError(f"sparsity must be a number in [0, 1), got {self.sparsity!r}")
        self.sparsity = float(self.sparsity)
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.distribution is not None:
            self.distribution = DISTRIBUTIONS.canonical(self.distribution)
        for name in ("targets", "ignore"):
            patterns = getattr(self, name)
            if isinstance(patterns, str):
                patterns = [patterns]
                setattr(self, name, patterns)
            for pattern in patterns or []:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ValueError(f"{name}: invalid regex {pattern!r}: {err}") from None
        for name in ("begin_step", "end_step"):
            value = getattr(self, name)
            if value is not None and (value < 0 or (value >= 1 and value != int(value))):
                raise ValueError(f"{name} must be a fraction in [0, 1) or a whole step count, got {value}")
        b, e = self.begin_step, self.end_step
        if b is not None and e is not None and (b < 1) == (e < 1) and b >= e:
            raise ValueError(f"begin_step ({b}) must come before end_step ({e})")
        self._check_range("update_every", 1, None, allow_none=True)
        self._check_range("snip_batches", 1, None)
        self._check_range("obert_num_grads", 1, None, allow_none=True)
        self._check_range("obert_block_size", 1, None, allow_none=True)
        self._check_selection()
        self._check_range("rewind_step", 0, None)
        self._check_range("erk_power_scale", 0.0, None)
        if not 0.0 < self.lth_rate < 1.0:
            raise ValueError(f"lth_rate must be in (0, 1), got {self.lth_rate}")
        if not 0.0 < self.drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in (0, 1], got {self.drop_fraction}")
        if not 0.0 <= self.drop_fraction_min <= self.drop_fraction:
            raise ValueError(
                f"drop_fraction_min must be in [0, drop_fraction = {self.drop_fraction}], got {self.drop_fraction_min}"
            )
        if not self.obert_damp > 0:
            raise ValueError(f"obert_damp must be > 0, got {self.obert_damp}")
        METHODS.get(self.method).validate(self)

    def _check_selection(self) -> None:
        from .selection import SELECTIONS

        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.targets and self.selection != "default":
            raise ValueError(
                f"targets replace the named selection, so selection = {self.selection!r} would be ignored; "
                "give one of them"
            )

    def _check_range(self, name: str, low, high, allow_none: bool = False):
        value = getattr(self, name)
        if value is None and allow_none:
            return
        if value is None or value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ValueError(f"{name} must be {bound}, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SparsityConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SparsityConfig fields: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_json_string(cls, text: str) -> "SparsityConfig":
        return cls.from_dict(json.loads(text))
