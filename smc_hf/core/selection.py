"""Which parameters are prunable: the named selections, `targets`/`ignore` regexes, and tied weights."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from torch import nn

logger = logging.getLogger(__name__)

#: Inside the backbone these stay dense by default: the pooler and ESM's contact-prediction head.
DEFAULT_IGNORE = (r"(^|\.)pooler\.", r"(^|\.)contact_head\.")

#: Projection matrices `nn.MultiheadAttention` keeps as bare Parameters rather than `nn.Linear` modules: q/k/v
#: packed in `in_proj_weight`, or apart when key/value dimensions differ. Its `out_proj` is an `nn.Linear`.
PACKED_PROJECTIONS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


@dataclass(frozen=True)
class Selection:
    """A named default selection: where to look, whether embedding matrices count, and what stays dense."""

    scope: str  # "backbone" (the task model's transformer body) or "model" (everything, task head included)
    embeddings: bool
    ignore: tuple[str, ...]
    help: str


SELECTIONS: dict[str, Selection] = {
    "default": Selection(
        "backbone", False, DEFAULT_IGNORE,
        "the backbone's projection weights (attention, packed q/k/v included, and feed-forward); embeddings, "
        "pooler and task head dense: the release's --no-pruning-emb-heads runs",
    ),
    "release-embeddings-heads": Selection(
        "model", True, (r"(^|\.)contact_head\.", r"(^|\.)token_type_embeddings\.", r"(^|\.)lm_head\.dense\."),
        "also the word and position embeddings, the pooler and the task head: the SMC-Bench release's README "
        "commands (fairseq's RoBERTa has no token-type embedding, so HF's stays dense)",
    ),
}


def _linear_types() -> tuple[type, ...]:
    types: list[type] = [nn.Linear]
    try:  # GPT-2 style models store their projections in transformers' Conv1D.
        from transformers.pytorch_utils import Conv1D

        types.append(Conv1D)
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
    return tuple(types)


def _module_weights(module: nn.Module, linear: tuple[type, ...], embeddings: bool) -> list[tuple[str, nn.Parameter]]:
    """The prunable matrices a module owns directly: a Linear's weight, an attention's packed projections."""
    if isinstance(module, linear) or (embeddings and isinstance(module, nn.Embedding)):
        candidates = ["weight"]
    elif isinstance(module, nn.MultiheadAttention):
        candidates = list(PACKED_PROJECTIONS)
    else:
        return []
    weights = [(attr, getattr(module, attr, None)) for attr in candidates]
    return [(attr, w) for attr, w in weights if isinstance(w, nn.Parameter)]


def _backbone(model: nn.Module) -> tuple[nn.Module, str]:
    """The transformer body of a task model (`model.roberta`, `model.esm`, ...), or the model itself."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    body = getattr(model, prefix, None) if prefix else None
    if isinstance(body, nn.Module) and body is not model:
        return body, prefix + "."
    return model, ""


def parameter_aliases(model: nn.Module) -> dict[int, list[str]]:
    """Every name under which each parameter object is reachable (more than one when weights are tied)."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return names


def adapter_parameter_ids(model: nn.Module) -> set[int]:
    """Parameters of PEFT adapters (LoRA A/B, ...): trainable add-ons, never part of the sparse base.

    PEFT tuner layers list their adapter sub-modules in `adapter_layer_names`; duck-typed, so PEFT stays optional.
    """
    ids: set[int] = set()
    for module in model.modules():
        for attr in getattr(module, "adapter_layer_names", ()):
            container = getattr(module, attr, None)
            if isinstance(container, nn.Module):
                ids.update(id(p) for p in container.parameters())
            elif isinstance(container, nn.Parameter):
                ids.add(id(container))
    return ids


_PEFT_WRAPPING = re.compile(r"^base_model\.model\.|(?<=\.)base_layer\.")


def plain_name(name: str) -> str:
    """A parameter's name with PEFT's wrapping removed (`base_model.model.` prefix, `.base_layer`), so masks
    saved from a plain model and from its PEFT-wrapped form refer to the same weights."""
    return _PEFT_WRAPPING.sub("", name)


def _matches(patterns: Iterable[str], names: Iterable[str]) -> bool:
    return any(re.search(p, n) for p in patterns for n in names)


def select_parameters(
    model: nn.Module, targets: Optional[list[str]] = None, ignore: Optional[list[str]] = None,
    selection: str = "default", required: bool = True,
) -> dict[str, nn.Parameter]:
    """Map parameter name -> parameter for every weight to prune, in model order.

    `selection` names the default (see `SELECTIONS`): "default" takes the backbone's projection matrices, i.e.
    the weights of its Linear (and GPT-2 Conv1D) layers and the q/k/v matrices `nn.MultiheadAttention` keeps
    outside any Linear (`in_proj_weight`), which leaves embeddings, norms, biases, the pooler and the task head
    dense. `targets` replaces it with any parameter of 2+ dims whose name matches; `ignore` removes matches.
    PEFT adapter weights (LoRA A/B, ...) are never selected. A tied parameter is selected once, under its first
    name, whichever of its names matched, so it is never pruned twice. An empty selection is an error when
    `required` (a method that prunes), else an empty dict.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose one of {', '.join(SELECTIONS)}")
    aliases = parameter_aliases(model)
    adapters = adapter_parameter_ids(model)
    ignore = list(ignore or [])
    selected: dict[str, nn.Parameter] = {}
    if targets:
        for name, param in model.named_parameters():
            names = aliases.get(id(param), [name])
            if id(param) in adapters:
                continue
            if param.dim() >= 2 and _matches(targets, names) and not _matches(ignore, names):
                selected[name] = param
        for pattern in targets:
            if not any(re.search(pattern, n) for names in aliases.values() for n in names):
                logger.warning("sparsity target %r matches no parameter name", pattern)
    else:
        preset = SELECTIONS[selection]
        body, prefix = _backbone(model) if preset.scope == "backbone" else (model, "")
        linear = _linear_types()
        by_id = {id(p): n for n, p in model.named_parameters()}
        for module_name, module in body.named_modules():
            for attr, weight in _module_weights(module, linear, preset.embeddings):
                if id(weight) in adapters:
                    continue
                name = by_id.get(id(weight), f"{prefix}{module_name}.{attr}".lstrip("."))
                names = aliases.get(id(weight), [name])
                if _matches(preset.ignore, names) or _matches(ignore, names) or name in selected:
                    continue
                selected[name] = weight
    if not selected and required:
        sample = ", ".join(n for n, _ in list(model.named_parameters())[:8])
        raise ValueError(
            f"no prunable weights selected (targets={targets}, ignore={ignore}, selection={selection!r}); "
            f"the model's parameters start with: {sample}"
        )
    return selected
