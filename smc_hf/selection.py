"""Which parameters are prunable: the default selection, `targets`/`ignore` regexes, and tied weights."""

from __future__ import annotations

import logging
import re
from typing import Iterable, Optional

from torch import nn

logger = logging.getLogger(__name__)

#: Inside the backbone these stay dense by default: the pooler and ESM's contact-prediction head.
DEFAULT_IGNORE = (r"(^|\.)pooler\.", r"(^|\.)contact_head\.")


def _linear_types() -> tuple[type, ...]:
    types: list[type] = [nn.Linear]
    try:  # GPT-2 style models store their projections in transformers' Conv1D.
        from transformers.pytorch_utils import Conv1D

        types.append(Conv1D)
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
    return tuple(types)


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


def _matches(patterns: Iterable[str], names: Iterable[str]) -> bool:
    return any(re.search(p, n) for p in patterns for n in names)


def select_parameters(
    model: nn.Module, targets: Optional[list[str]] = None, ignore: Optional[list[str]] = None
) -> dict[str, nn.Parameter]:
    """Map parameter name -> parameter for every weight to prune, in model order.

    Default: the weights of the backbone's Linear layers, which leaves embeddings, norms, biases, the pooler
    and the task head dense. `targets` replaces the default with any parameter of 2+ dims whose name
    matches; `ignore` removes matches. A tied parameter is selected once, under its first name, whichever
    of its names matched, so it is never pruned twice.
    """
    aliases = parameter_aliases(model)
    ignore = list(ignore or [])
    selected: dict[str, nn.Parameter] = {}
    if targets:
        for name, param in model.named_parameters():
            names = aliases.get(id(param), [name])
            if param.dim() >= 2 and _matches(targets, names) and not _matches(ignore, names):
                selected[name] = param
        for pattern in targets:
            if not any(re.search(pattern, n) for names in aliases.values() for n in names):
                logger.warning("sparsity target %r matches no parameter name", pattern)
    else:
        body, prefix = _backbone(model)
        linear = _linear_types()
        by_id = {id(p): n for n, p in model.named_parameters()}
        for module_name, module in body.named_modules():
            weight = getattr(module, "weight", None)
            if not isinstance(module, linear) or not isinstance(weight, nn.Parameter):
                continue
            name = by_id.get(id(weight), f"{prefix}{module_name}.weight")
            names = aliases.get(id(weight), [name])
            if _matches(DEFAULT_IGNORE, names) or _matches(ignore, names) or name in selected:
                continue
            selected[name] = weight
    if not selected:
        sample = ", ".join(n for n, _ in list(model.named_parameters())[:8])
        raise ValueError(
            f"no prunable weights selected (targets={targets}, ignore={ignore}); "
            f"the model's parameters start with: {sample}"
        )
    return selected
