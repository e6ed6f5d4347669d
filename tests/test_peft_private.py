"""The private PEFT names masked LoRA relies on: when one disappears, masking fails loudly, naming it."""

import re
from importlib import metadata

import peft.tuners.lora.layer as lora_layer
import pytest
from peft import LoraConfig, get_peft_model

from smc_hf import SparsityConfig, prune_model
from smc_hf.integrations import _peft_private
from smc_hf.integrations._peft_private import PeftPrivateAPIError, masked_lora_variant
from smc_hf.integrations.peft import mask_lora
from tests.helpers import tiny_roberta

VERSION = re.escape(f"peft {metadata.version('peft')}")


@pytest.fixture(autouse=True)
def fresh_variant_class():
    """The masked variant class is built once per process; rebuild it around each test."""
    masked_lora_variant.cache_clear()
    yield
    masked_lora_variant.cache_clear()


def _sparse_lora():
    model = tiny_roberta()
    masks = prune_model(model, SparsityConfig(method="omp", sparsity=0.5))
    config = LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False, lora_dropout=0.0)
    return get_peft_model(model, config), masks


def test_the_installed_peft_has_the_private_names():
    peft_model, masks = _sparse_lora()
    assert issubclass(masked_lora_variant(), lora_layer.LoraVariant)
    assert mask_lora(peft_model, masks) == 4
    layers = [m for m in peft_model.modules() if isinstance(m, lora_layer.LoraLayer)]
    assert len(layers) == 4
    assert all(isinstance(_peft_private.layer_variants(m)["default"], masked_lora_variant()) for m in layers)


def test_a_missing_variant_base_class_is_named_with_the_peft_version(monkeypatch):
    peft_model, masks = _sparse_lora()
    monkeypatch.delattr(lora_layer, "LoraVariant")
    with pytest.raises(PeftPrivateAPIError, match=rf"private peft\.tuners\.lora\.layer\.LoraVariant.*{VERSION}"):
        mask_lora(peft_model, masks)


def test_a_missing_variants_attribute_is_named_with_the_peft_version(monkeypatch):
    peft_model, masks = _sparse_lora()
    for module in peft_model.modules():
        if isinstance(module, lora_layer.LoraLayer):
            monkeypatch.delattr(module, "lora_variant")
    with pytest.raises(PeftPrivateAPIError, match=rf"private LoraLayer\.lora_variant.*{VERSION}"):
        mask_lora(peft_model, masks)
    assert not any(hasattr(m, "sparsity_mask") for m in peft_model.modules())
