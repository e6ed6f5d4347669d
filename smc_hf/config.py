"""`SparsityConfig`: the single vocabulary of a sparse run, read by `HfArgumentParser`, validated on construction."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from .core.allocation import DISTRIBUTIONS
from .core.owl import DEFAULT_LAMBDA, DEFAULT_THRESHOLD_M
from .core.patterns import NMPattern
from .core.selection import SELECTIONS
from .methods import DENSE_METHOD, METHODS
from .methods.rigl import RigL


#: Largest int any field takes (int64), and the seed range that torch, numpy and `transformers.set_seed` all accept.
INT64_MAX = 2**63 - 1
SEED_MAX = 2**32 - 1


def _type_error(name: str, value, expected: str, fix: str = "") -> ValueError:
    shown = f"the string {value!r}" if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
    return ValueError(f"{name} must be {expected}, got {shown}" + (f"; {fix}" if fix else ""))


def _coerce(name: str, kind: str, value):
    """`value` checked against the field's declared type (`bool`, `int`, `float`, `str`, `list[str]`).

    The CLI parser (`HfArgumentParser`) converts its strings before construction, so any string still reaching
    a bool, int or float field came from Python or a JSON file and is refused rather than guessed at.
    """
    if kind == "bool":
        if isinstance(value, bool):
            return value
        fix = ("write it without quotes: false/true in JSON, False/True in Python"
               if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0") else "")
        raise _type_error(name, value, "true or false (a boolean)", fix)
    if kind == "int":
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(name, value, "a whole number", "pass an integer such as 2" if isinstance(value, float) else "")
        if abs(value) > INT64_MAX:
            raise ValueError(f"{name} = {value} does not fit in 64 bits")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(name, value, "a number")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        return value  # an int stays an int: a step count reads back as written
    if kind == "str":
        if not isinstance(value, str):
            raise _type_error(name, value, "a string")
        return value
    if kind == "list[str]":
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple)):
            raise _type_error(name, value, "a list of strings (regexes)")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"{name} must be a list of strings (regexes); item {i} is {item!r} "
                                 f"({type(item).__name__}), quote it")
        return list(value)
    raise TypeError(f"SparsityConfig.{name}: unsupported field type {kind!r}")


def _field_kind(hint) -> tuple[str, bool]:
    """('int', True) for Optional[int]: the base type's name and whether None is allowed."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) is typing.Union and type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is list:
        return f"list[{typing.get_args(hint)[0].__name__}]", optional
    return hint.__name__, optional


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

    method: str = _arg(DENSE_METHOD, "Sparse algorithm (see smc_hf.available_methods()).", "--sparsity_method")
    sparsity: float = _arg(0.0, "Target fraction of selected weights set to zero, in [0, 1).")
    distribution: Optional[str] = _arg(
        None, "How sparsity is spread over layers: uniform, global, erk or owl (default: the method's).",
        "--sparsity_distribution",
    )
    pattern: Optional[str] = _arg(
        None, "N:M semi-structured pattern, e.g. 2:4: keep the N best-scored of every M consecutive weights along "
        "each layer's input dimension. Sets sparsity to 1 - N/M in every layer; no distribution. With method "
        "fixed: verify that the loaded mask follows it.", "--sparsity_pattern",
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
    owl_threshold_m: float = _arg(
        DEFAULT_THRESHOLD_M, "OWL: a score is an outlier above M times its block's mean score (the paper's M = 5)."
    )
    owl_lambda: float = _arg(
        DEFAULT_LAMBDA, "OWL: block sparsities spread over about [s - lambda, s + lambda] by outlier ratio "
        "(the paper's 0.08).",
    )
    snip_batches: int = _arg(1, "SNIP: training batches whose |grad * weight| scores are summed.")
    snip_train_mode: bool = _arg(
        False, "SNIP (and rigl_init snip): score with dropout on, as the release's train-mode pass (default off: "
        "the score depends on the weights and the batch alone).",
    )
    rigl_init: str = _arg(RigL.initial_masks[0], f"RigL: initial mask from {', '.join(RigL.initial_masks)}.")
    drop_fraction: float = _arg(0.5, "RigL: initial fraction of active weights dropped per update (cosine-decayed).")
    rigl_release_growth: bool = _arg(
        False, "RigL: the release's growth: just-dropped weights may be regrown in the same update and keep their "
        "value, and no optimizer moment is reset (default: grown weights start at 0 with zeroed moments and "
        "just-dropped weights are not regrown).",
    )
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
    sparsegpt_blocksize: int = _arg(128, "SparseGPT: input columns per block whose masks are chosen together.")
    sparsegpt_damp: float = _arg(
        0.01, "SparseGPT: dampening added to the Hessian's diagonal, as a fraction of its mean (the reference's percdamp).",
    )
    activation_samples: Optional[int] = _arg(
        None, "SparseGPT, Wanda: calibration examples whose layer inputs are read (default: every batch given to "
        "prune_model / smc-prune; 128 of the training set inside a Trainer).",
    )
    sequential_calibration: bool = _arg(
        True, "SparseGPT, Wanda: calibrate and prune block by block, holding one block's inputs (False: one pass of "
        "the whole model gathers every layer's statistics first).",
    )

    @property
    def method_class(self):
        """The registered class of `method`, whose attributes state the method's facts."""
        return METHODS.get(self.method)

    def __post_init__(self):
        self._check_types()
        self.method = METHODS.canonical(self.method)
        self.sparsity = float(self.sparsity)
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.distribution is not None:
            self.distribution = DISTRIBUTIONS.canonical(self.distribution)
        self._check_pattern()
        if self.mask_seed is not None and not 0 <= self.mask_seed <= SEED_MAX:
            raise ValueError(f"mask_seed must be in [0, 2**32 - 1] (the seeds transformers' set_seed accepts), "
                             f"got {self.mask_seed}")
        for name in ("targets", "ignore"):
            for pattern in getattr(self, name) or []:
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
        if not self.owl_threshold_m > 0:
            raise ValueError(f"owl_threshold_m must be > 0 (outliers lie above M times the mean), "
                             f"got {self.owl_threshold_m}")
        if not 0.0 <= self.owl_lambda < 1.0:
            raise ValueError(f"owl_lambda must be in [0, 1) (a spread of block sparsities), got {self.owl_lambda}")
        if not 0.0 < self.lth_rate < 1.0:
            raise ValueError(f"lth_rate must be in (0, 1), got {self.lth_rate}")
        if not 0.0 < self.drop_fraction <= 1.0:
            raise ValueError(f"drop_fraction must be in (0, 1], got {self.drop_fraction}")
        if not 0.0 <= self.drop_fraction_min <= self.drop_fraction:
            raise ValueError(
                f"drop_fraction_min must be in [0, drop_fraction = {self.drop_fraction}], got {self.drop_fraction_min}"
            )
        self._check_range("sparsegpt_blocksize", 1, None)
        self._check_range("activation_samples", 1, None, allow_none=True)
        if not self.sparsegpt_damp >= 0:
            raise ValueError(f"sparsegpt_damp must be >= 0, got {self.sparsegpt_damp}")
        if not self.obert_damp > 0:
            raise ValueError(f"obert_damp must be > 0, got {self.obert_damp}")
        METHODS.get(self.method).validate(self)

    @property
    def nm_pattern(self) -> Optional[NMPattern]:
        """`pattern` parsed, or None for unstructured masks."""
        return NMPattern.parse(self.pattern) if self.pattern is not None else None

    def _check_pattern(self) -> None:
        """An N:M pattern fixes every layer's sparsity at 1 - N/M: it sets `sparsity` when left at 0, and a
        different sparsity or an explicit distribution is an error (either would be silently overridden)."""
        if self.pattern is None:
            return
        pattern = NMPattern.parse(self.pattern)
        self.pattern = str(pattern)
        method = METHODS.get(self.method)
        if not method.masks_weights:
            raise ValueError(f"method {self.method!r} prunes nothing, so pattern = {self.pattern} has no mask to "
                             "shape; pick a sparse method")
        if not method.supports_pattern:
            capable = [n for n in METHODS.names() if METHODS.get(n).supports_pattern
                       and METHODS.get(n).prunes_to_target and METHODS.get(n).one_shot_capable]
            raise ValueError(
                f"method {self.method!r} {method.pattern_conflict}, which an N:M pattern (a fixed 1 - N/M in every "
                f"group) cannot follow; prune with the pattern by one of {', '.join(capable)}, then keep the mask "
                "while training with method 'fixed'"
            )
        if self.distribution is not None:
            raise ValueError(
                f"pattern {self.pattern} prunes {self.pattern.split(':')[1]}-weight groups alike in every layer, so "
                f"distribution = {self.distribution!r} would be ignored; leave the distribution out"
            )
        if not method.prunes_to_target:
            return
        if self.sparsity == 0.0:
            self.sparsity = pattern.sparsity
        elif not math.isclose(self.sparsity, pattern.sparsity, rel_tol=0.0, abs_tol=1e-9):
            raise ValueError(
                f"pattern {self.pattern} prunes exactly 1 - {pattern.n}/{pattern.m} = {pattern.sparsity:g} of every "
                f"layer, but sparsity = {self.sparsity:g}; leave sparsity out (the pattern sets it) or drop the pattern"
            )

    def _check_selection(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.targets and self.selection != "default":
            raise ValueError(
                f"targets replace the named selection, so selection = {self.selection!r} would be ignored; "
                "give one of them"
            )

    def _check_types(self) -> None:
        """Every field has its declared type (ints whole, floats finite, bools real booleans), or a ValueError
        naming the field is raised here, before anything runs."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            kind, optional = _field_kind(hints[f.name])
            value = getattr(self, f.name)
            if value is None:
                if optional:
                    continue
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                raise ValueError(f"{f.name} must not be None; leave it out for its default {default!r}")
            setattr(self, f.name, _coerce(f.name, kind, value))

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
        """A config from field names; the CLI spellings (`sparsity_method`, `sparsity-method`) are accepted too."""
        if not isinstance(data, dict):
            raise ValueError(f"a SparsityConfig must be a JSON object / dict, got {type(data).__name__}")
        names = {}
        for f in dataclasses.fields(cls):
            for spelling in [f.name] + [a.lstrip("-") for a in f.metadata.get("aliases", [])]:
                names[spelling] = names[spelling.replace("_", "-")] = f.name
        kwargs, unknown = {}, []
        for key, value in data.items():
            name = names.get(key)
            if name is None:
                unknown.append(key)
            elif name in kwargs:
                raise ValueError(f"SparsityConfig field {name!r} is given twice (as {key!r} and another spelling)")
            else:
                kwargs[name] = value
        if unknown:
            raise ValueError(f"unknown SparsityConfig fields: {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(f.name for f in dataclasses.fields(cls))}")
        return cls(**kwargs)

    @classmethod
    def from_json_string(cls, text: str) -> "SparsityConfig":
        return cls.from_dict(json.loads(text))
