"""PEFT adapters on a sparse base without losing its sparsity.

Training an adapter leaves the frozen base weights (and their zeros) intact; merging does not: W + BA is
dense. Two ways out:

- `merge_sparse(peft_model)`: merge with PEFT's own `merge_and_unload`, then re-apply the base mask,
  i.e. W + (BA ⊙ M). The part of the update that fell on pruned positions is dropped; the relative error
  this causes in each merged layer's output is measured and reported.
- `mask_lora(peft_model)` before training: the LoRA delta is masked in the forward pass, (BA ⊙ M) x, so
  the adapter only learns what the sparse layer can hold and the merge is exact.

Masks come from a `MaskSet`, a mask file, the `sparsity_masks.safetensors` beside the base checkpoint, or
(with a warning) the base weights' exact zeros. Names may be plain or PEFT-wrapped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from torch import nn

from ..core.mask_names import mask_renaming, model_prefix
from ..core.masks import MaskSet
from ..core.selection import plain_name
from ..core.zeros import count_zeros
from ..io.mask_file import MASKS_FILE
from ._peft_private import layer_variants, masked_lora_variant, set_variant

logger = logging.getLogger(__name__)

MaskSource = Union[MaskSet, dict, str, None]


def _tuner_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def _base_weight_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> plain name, for every parameter of the wrapped model."""
    return {id(p): plain_name(n) for n, p in model.named_parameters(remove_duplicate=False)}


def base_masks(peft_model: nn.Module, masks: MaskSource = None) -> dict[str, torch.Tensor]:
    """Keep-masks of the base weights, keyed by plain parameter name of `peft_model`.

    Masks saved by the same body under another head (a bare checkpoint's `encoder...` for a task model's
    `bert.encoder...`, or back) are mapped as transformers maps weights (`smc_hf.core.mask_names`).
    """
    from ..io.mask_file import read_masks

    where = "masks"
    if isinstance(masks, MaskSet):
        found = dict(masks.masks)
    elif isinstance(masks, dict):
        found = {n: m.to(torch.bool) for n, m in masks.items()}
    else:
        path = masks
        if path is None:
            source = getattr(peft_model, "name_or_path", "") or ""
            path = os.path.join(source, MASKS_FILE) if source else None
        elif os.path.isdir(path):
            path = os.path.join(path, MASKS_FILE)
        if path and os.path.isfile(path):
            found, where = read_masks(path), path
        elif masks is not None:
            raise FileNotFoundError(f"no sparsity masks at {path}")
        else:
            logger.warning("no %s beside the base model; taking the mask from its exactly-zero weights", MASKS_FILE)
            layers = _tuner_layers(peft_model)
            names = _base_weight_names(peft_model)
            found = {}
            for layer in layers.values():
                weight = getattr(layer.get_base_layer(), "weight", None)
                if isinstance(weight, nn.Parameter) and bool((weight == 0).any()):
                    found[names[id(weight)]] = weight.detach() != 0
    if not found:
        raise ValueError("no masks found for the base model: is it sparse?")
    names = {plain_name(n) for n, _ in peft_model.named_parameters(remove_duplicate=False)}
    renaming = mask_renaming(found, names, model_prefix(peft_model)).check(where)
    return {renaming.renamed[n]: m for n, m in found.items() if n in renaming.renamed}


def _masked_layers(peft_model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Tuner layers whose base weight has a mask: plain weight name -> (layer, mask), shapes checked."""
    names = _base_weight_names(peft_model)
    out = {}
    for layer in _tuner_layers(peft_model).values():
        weight = getattr(layer.get_base_layer(), "weight", None)
        name = names.get(id(weight))
        if name in masks:
            mask = masks[name]
            if tuple(mask.shape) != tuple(weight.shape):
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight has {tuple(weight.shape)}")
            out[name] = (layer, mask.to(device=weight.device, dtype=torch.bool))
    return out


# -- masked LoRA ----------------------------------------------------------------------------------------
def mask_lora(peft_model: nn.Module, masks: MaskSource = None) -> int:
    """Mask the delta of every LoRA layer whose base weight is sparse; returns the number of layers masked.

    Call it after `get_peft_model` / `PeftModel.from_pretrained` and before training or merging. The masks
    are not saved with the adapter: call it again after loading the adapter.
    """
    from peft.tuners.lora import Linear as LoraLinear

    variant_class = masked_lora_variant()
    variant = variant_class()
    layers = _masked_layers(peft_model, base_masks(peft_model, masks))
    if not layers:
        raise ValueError("no adapter layer wraps a masked base weight; check the adapter's target_modules")
    for name, (layer, mask) in layers.items():
        if not isinstance(layer, LoraLinear):
            raise ValueError(f"masked adapters support LoRA Linear layers; {name} is wrapped by {type(layer).__name__}")
        taken = [a for a, v in layer_variants(layer).items() if not isinstance(v, variant_class)]
        if taken:
            raise ValueError(f"{name}: adapter(s) {taken} already use a LoRA variant (e.g. DoRA); cannot mask them")
        if layer.merged:
            raise ValueError(f"{name}: unmerge the adapter before masking it")
        layer.register_buffer("sparsity_mask", mask, persistent=False)
        for adapter in layer.lora_A:
            set_variant(layer, adapter, variant)
    return len(layers)


# -- sparse merge ---------------------------------------------------------------------------------------
@dataclass
class MergeReport:
    """What a sparse merge did: per-layer relative output error and sparsity of the masked weights."""

    layer_errors: dict[str, float] = field(default_factory=dict)
    sparsity_before: float = 0.0
    sparsity_after: float = 0.0
    error_measure: str = "weights"

    @property
    def max_error(self) -> float:
        return max(self.layer_errors.values(), default=0.0)


def _zero_fraction(weights: list[torch.Tensor]) -> float:
    return sum(count_zeros(w) for w in weights) / max(1, sum(w.numel() for w in weights))


@torch.no_grad()
def merge_sparse(
    peft_model: nn.Module, masks: MaskSource = None, inputs: Optional[dict] = None, warn_above: float = 1e-2,
) -> tuple[nn.Module, MergeReport]:
    """Merge the adapters into the base (`merge_and_unload`) and re-apply the base mask: W + (BA ⊙ M).

    The relative error ||y_merged - y_unmerged|| / ||y_unmerged|| of each adapted layer is measured on
    `inputs` (a batch for the model) when given; otherwise on the weights, ||(W + BA) ⊙ (1 - M)|| /
    ||W + BA||, which is the expected output error for isotropic inputs. After `mask_lora` nothing falls
    on pruned positions: the weight error is exactly 0. Returns the merged plain model and the report.
    """
    layers = _masked_layers(peft_model, base_masks(peft_model, masks))
    if not layers:
        raise ValueError("no adapter layer wraps a masked base weight; nothing to merge sparsely")
    bases = {name: layer.get_base_layer() for name, (layer, _) in layers.items()}
    before = _zero_fraction([bases[n].weight for n in layers])
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if inputs is not None:
        hooks = [
            layer.register_forward_hook(lambda mod, args, out, name=name: captured.__setitem__(name, (args[0], out)))
            for name, (layer, _) in layers.items()
        ]
        was_training = peft_model.training
        try:
            peft_model.eval()
            peft_model(**inputs)
        finally:
            peft_model.train(was_training)
            for hook in hooks:
                hook.remove()
    merged = peft_model.merge_and_unload()
    report = MergeReport(error_measure="outputs" if inputs is not None else "weights")
    for name, (_, mask) in layers.items():
        weight = bases[name].weight
        if inputs is None:
            report.layer_errors[name] = float(weight[~mask].float().norm() / weight.float().norm().clamp_min(1e-30))
        weight.mul_(mask)
        if inputs is not None and name in captured:
            x, reference = captured[name]
            out = bases[name](x)
            report.layer_errors[name] = float((out - reference).float().norm() / reference.float().norm().clamp_min(1e-30))
    report.sparsity_before = before
    report.sparsity_after = _zero_fraction([bases[n].weight for n in layers])
    if report.max_error > warn_above:
        worst = max(report.layer_errors, key=report.layer_errors.get)
        logger.warning(
            "sparse merge: dropping the adapter update on pruned weights changes %s's output by %.2e (relative); "
            "train with smc_hf.integrations.peft.mask_lora for an exact merge", worst, report.max_error,
        )
    return merged, report
