"""Which weight a saved mask names, when the model that reads it has another head or wrapper.

A mask file names weights as the model that wrote it did: a bare `BertModel` says `encoder.layer.0...`, the
same encoder under a task head says `bert.encoder.layer.0...`, a PEFT wrapper adds `base_model.model.` and
`.base_layer`. transformers loads weights across these by adding or stripping the model's
`base_model_prefix`, one key at a time; masks follow the same rule here, so whatever `from_pretrained` loads,
its masks load too. This is the only place that maps mask names (MaskSet, `fixed`, resume, PEFT all call it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

from torch import nn

from .selection import plain_name

logger = logging.getLogger(__name__)


def model_prefix(model: nn.Module) -> str:
    """The `base_model_prefix` of a transformers model, looked up under a PEFT wrapper too ("" for plain torch)."""
    inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    prefix = getattr(inner, "base_model_prefix", "")
    return prefix if isinstance(prefix, str) else ""


@dataclass
class MaskRenaming:
    """Mask name -> parameter name for the masks that have a weight; the rest sorted by why they have none."""

    renamed: dict[str, str] = field(default_factory=dict)
    #: Masks of the source's task head (outside its `base_model_prefix` body), absent from a bare model.
    dropped_heads: list[str] = field(default_factory=list)
    #: Masks with no weight: another model, or a weight this model does not select.
    unknown: list[str] = field(default_factory=list)

    def check(self, source: str) -> "MaskRenaming":
        """Refuse unknown masks; log the head masks left out. Returns itself."""
        if self.unknown:
            raise ValueError(
                f"{source}: masks for parameters that are not selected: {self.unknown[:5]}"
                f"{' ...' if len(self.unknown) > 5 else ''}. The masks belong to another model or selection; "
                "use the mask file of this checkpoint, with the selection it was pruned with"
            )
        if self.dropped_heads:
            logger.info(
                "%s: %d mask(s) of the source model's task head have no counterpart in this model and are not "
                "used: %s", source, len(self.dropped_heads), self.dropped_heads,
            )
        return self


def mask_renaming(mask_names: Iterable[str], param_names: Iterable[str], base_model_prefix: str = "") -> MaskRenaming:
    """Map each mask name onto one of `param_names`, the way transformers maps checkpoint keys.

    A name matches its parameter as is, or once PEFT's wrapping is removed from both; otherwise with
    `base_model_prefix.` stripped (a task model's masks read by the bare model) or added (a bare model's masks
    read under a task head). A mask with no match is a dropped head when it lies outside the prefix while the
    masks use the prefix (the source was a task model), else unknown. Two masks for one weight, or one mask
    matching two weights, is an error: the masks would be ambiguous.
    """
    params = list(param_names)
    by_plain: dict[str, str] = {}
    for name in params:
        by_plain.setdefault(plain_name(name), name)
    names = list(mask_names)
    dot = f"{base_model_prefix}." if base_model_prefix else ""
    source_has_prefix = bool(dot) and any(plain_name(n).startswith(dot) for n in names)
    out = MaskRenaming()
    owner: dict[str, str] = {}
    for name in names:
        plain = plain_name(name)
        candidates = [plain]
        if dot:
            candidates += [plain[len(dot):]] if plain.startswith(dot) else [dot + plain]
        found = sorted({by_plain[c] for c in candidates if c in by_plain})
        if len(found) > 1:
            raise ValueError(f"mask {name!r} matches the weights {found} (with and without the model's "
                             f"base_model_prefix {base_model_prefix!r}); rename the masks to say which")
        if not found:
            head = source_has_prefix and not plain.startswith(dot)
            (out.dropped_heads if head else out.unknown).append(name)
            continue
        target = found[0]
        if target in owner:
            raise ValueError(f"masks {owner[target]!r} and {name!r} both name the weight {target!r}; keep one")
        owner[target] = name
        out.renamed[name] = target
    return out
