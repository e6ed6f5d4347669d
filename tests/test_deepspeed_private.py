"""The private DeepSpeed names the ZeRO placements rely on: when one disappears, placing fails loudly.

DeepSpeed is not installed here: `deepspeed.utils` is replaced by the one public helper the check calls.
"""

import sys
import types

import pytest
import torch

from smc_hf import MaskSet
from smc_hf.integrations import _deepspeed_private
from smc_hf.integrations._deepspeed_private import DeepSpeedPrivateAPIError
from smc_hf.integrations.distributed import DeepSpeedPlacement, placement_for
from tests.helpers import tiny_roberta


def _install_deepspeed(monkeypatch, holds_masters: bool):
    """DeepSpeed as Accelerate and its public `safe_get_full_fp32_param` see it, without the engine."""
    utils = types.SimpleNamespace(safe_get_full_fp32_param=lambda p: p.detach().float() if holds_masters else None)
    module = types.ModuleType("deepspeed")
    module.utils = utils
    monkeypatch.setitem(sys.modules, "deepspeed", module)
    monkeypatch.setitem(sys.modules, "deepspeed.utils", utils)
    monkeypatch.setattr(_deepspeed_private, "deepspeed_active", lambda: True)


def test_the_marks_choose_the_stage():
    model = tiny_roberta()
    assert placement_for(model) is None
    next(model.parameters())._hp_mapping = None
    placement = placement_for(model)
    assert isinstance(placement, DeepSpeedPlacement) and not placement.stage3
    next(model.parameters()).ds_id = 0
    assert placement_for(model).stage3


def test_masters_without_a_mark_name_both_private_marks(monkeypatch):
    """ZeRO-1/2 and ZeRO-3 set `_hp_mapping` / `ds_id`; a DeepSpeed that renamed them is caught, not missed."""
    _install_deepspeed(monkeypatch, holds_masters=True)
    with pytest.raises(DeepSpeedPrivateAPIError, match=r"private 'ds_id' / '_hp_mapping'.*DeepSpeed \(version unknown\)"):
        placement_for(tiny_roberta())


def test_deepspeed_without_masters_is_replicated(monkeypatch):
    """ZeRO-0 in fp32 keeps whole weights and no masters: nothing to place, as before."""
    _install_deepspeed(monkeypatch, holds_masters=False)
    assert placement_for(tiny_roberta()) is None


def test_a_zero3_parameter_without_its_slice_names_ds_tensor(monkeypatch):
    model = tiny_roberta()
    masks = MaskSet.for_model(model)
    for i, param in enumerate(masks.params.values()):
        param.ds_id = i  # the ZeRO-3 mark is there, the local slice `ds_tensor` is not
    masks.update({n: torch.ones(s, dtype=torch.bool) for n, s in masks.shapes.items()})
    placement = placement_for(model)
    with pytest.raises(DeepSpeedPrivateAPIError, match=r"private 'ds_tensor'"):
        placement.local_masks(masks)
