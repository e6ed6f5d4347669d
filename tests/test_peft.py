"""PEFT on a sparse base: training keeps the base mask, merges stay sparse, masked LoRA merges exactly."""

import pytest
import torch
from peft import LoHaConfig, LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification

from smc_hf import SparseTrainer, SparsityConfig, prune_model
from smc_hf.pruning.sparse_folder import save_sparse_pretrained
from smc_hf.integrations.peft import mask_lora, merge_sparse
from smc_hf.core.selection import select_parameters
from tests.helpers import ToyClassification, tiny_roberta, training_args

TARGETS = ["query", "value", "dense"]


def _sparse_base(sparsity=0.5):
    model = tiny_roberta()
    masks = prune_model(model, SparsityConfig(method="omp", sparsity=sparsity))
    return model, masks


def _batch():
    gen = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(6, 64, (4, 12), generator=gen), "attention_mask": torch.ones(4, 12, dtype=torch.long)}


def _lora(model, **kwargs):
    kwargs.setdefault("lora_dropout", 0.0)
    return get_peft_model(model, LoraConfig(r=4, target_modules=TARGETS, init_lora_weights=False, **kwargs))


def _zeros(model, masks):
    params = dict(model.named_parameters())
    return {n: int((params[n] == 0).sum()) for n in masks.masks}


def test_adapter_weights_are_never_selected_for_pruning():
    peft_model = _lora(tiny_roberta())
    names = list(select_parameters(peft_model))
    assert len(names) == 12 and not any("lora_" in n for n in names)
    assert sum(".base_layer." in n for n in names) == 10  # 2 layers x (query, value, 3 dense)


def test_lora_training_with_sparse_trainer_keeps_the_base_mask(tmp_path):
    model, masks = _sparse_base()
    save_sparse_pretrained(model, tmp_path / "base", masks, SparsityConfig(method="omp", sparsity=0.5))
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=TARGETS, modules_to_save=["classifier"]))
    lora_b = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}
    trainer = SparseTrainer(model=peft_model, args=training_args(tmp_path / "t", max_steps=4),
                            train_dataset=ToyClassification(n=16), sparsity_config=SparsityConfig(method="fixed"))
    trainer.train()
    callback = trainer.sparsity_callback
    assert not any("lora_" in n for n in callback.masks.names)
    merged_names = {n.replace("base_model.model.", "").replace(".base_layer", ""): m
                    for n, m in callback.masks.masks.items()}
    for name, mask in masks.masks.items():
        assert torch.equal(merged_names[name], mask), name
    for name, param in callback.masks.params.items():
        assert bool((param[~callback.masks.masks[name]] == 0).all()), name
    trained = dict(peft_model.named_parameters())
    assert any(not torch.equal(trained[n], v) for n, v in lora_b.items()), "LoRA did not train"


def test_sparse_merge_keeps_the_mask_and_reports_the_output_error():
    model, masks = _sparse_base()
    before_zeros = _zeros(model, masks)
    peft_model = _lora(model)
    batch = _batch()
    with torch.no_grad():
        peft_model.eval()
        before = peft_model(**batch).logits
    merged, report = merge_sparse(peft_model, masks, inputs=batch)
    after = _zeros(merged, masks)
    params = dict(merged.named_parameters())
    for name, mask in masks.masks.items():
        assert bool((params[name][~mask] == 0).all()), name
        assert after[name] >= int((~mask).sum())
    assert sum(after.values()) >= sum(int((~m).sum()) for m in masks.masks.values())
    assert report.error_measure == "outputs" and len(report.layer_errors) == 10
    assert report.max_error > 1e-3  # a dense random adapter loses its update on pruned positions
    assert report.sparsity_before == pytest.approx(report.sparsity_after, abs=1e-3)
    with torch.no_grad():
        merged.eval()
        drift = (merged(**batch).logits - before).norm() / before.norm()
    assert drift > 0
    assert sum(before_zeros.values()) == sum(int((~m).sum()) for m in masks.masks.values())


def test_masked_lora_forward_is_masked_and_its_merge_is_exact():
    model, masks = _sparse_base()
    peft_model = _lora(model, lora_dropout=0.1)
    assert mask_lora(peft_model, masks) == 10
    layer = peft_model.base_model.model.roberta.encoder.layer[0].attention.self.query
    mask = masks.masks["roberta.encoder.layer.0.attention.self.query.weight"]
    x = torch.randn(3, 16)
    layer.eval()
    expected = torch.nn.functional.linear(x, layer.base_layer.weight + layer.get_delta_weight("default") * mask,
                                          layer.base_layer.bias)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    batch = _batch()
    with torch.no_grad():
        peft_model.eval()
        unmerged = peft_model(**batch).logits
    merged, report = merge_sparse(peft_model, masks)
    assert report.error_measure == "weights" and report.max_error == 0.0
    params = dict(merged.named_parameters())
    for name, keep in masks.masks.items():
        assert bool((params[name][~keep] == 0).all()), name
    with torch.no_grad():
        merged.eval()
        assert torch.allclose(merged(**batch).logits, unmerged, atol=1e-5)


def test_masked_lora_trains_and_peft_own_merge_stays_sparse():
    model, masks = _sparse_base()
    name = "roberta.encoder.layer.1.output.dense.weight"
    original = dict(model.named_parameters())[name].detach().clone()
    peft_model = _lora(model)
    mask_lora(peft_model, masks)
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    batch = dict(_batch(), labels=torch.tensor([0, 1, 0, 1]))
    for _ in range(2):
        peft_model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    merged = peft_model.merge_and_unload()  # PEFT's own merge goes through the masked variant
    params = dict(merged.named_parameters())
    for key, keep in masks.masks.items():
        assert bool((params[key][~keep] == 0).all()), key
    assert _zeros(merged, masks) == {n: int((~m).sum()) for n, m in masks.masks.items()}
    assert not torch.equal(params[name], original)


def test_other_adapters_merge_sparsely_and_bad_masks_are_refused():
    model, masks = _sparse_base()
    loha = get_peft_model(model, LoHaConfig(r=2, target_modules=TARGETS, init_weights=False))
    merged, report = merge_sparse(loha, masks)
    params = dict(merged.named_parameters())
    for name, keep in masks.masks.items():
        assert bool((params[name][~keep] == 0).all()), name
    assert report.max_error > 0
    model, masks = _sparse_base()
    peft_model = _lora(model)
    name = "roberta.encoder.layer.0.attention.self.query.weight"
    with pytest.raises(ValueError, match=rf"mask for {name} has shape \(2, 2\)"):
        mask_lora(peft_model, {name: torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(FileNotFoundError, match="no sparsity masks"):
        merge_sparse(peft_model, "/nonexistent/folder/masks.safetensors")
    dora = get_peft_model(_sparse_base()[0], LoraConfig(r=2, target_modules=TARGETS, use_dora=True))
    with pytest.raises(ValueError, match="already use a LoRA variant"):
        mask_lora(dora, masks)
