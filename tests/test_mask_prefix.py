"""Masks follow weights across heads: a base checkpoint's masks (`encoder.layer...`) apply to the same model
loaded under a task head (`bert.encoder.layer...`) and back, as transformers maps the weights
(`base_model_prefix`), for `fixed`, resume, `MaskSet.load`, `merge_sparse` and `mask_lora`."""

import logging
import os

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig, BertModel

from smc_hf import MASKS_FILE, SparseTrainer, SparsityConfig, prune_checkpoint
from smc_hf.core.mask_names import mask_renaming
from smc_hf.core.masks import MaskSet
from smc_hf.integrations.peft import mask_lora, merge_sparse
from smc_hf.io.mask_file import read_masks
from tests.helpers import ToyClassification, tiny_bert, training_args

LAYER0_QUERY = "encoder.layer.0.attention.self.query.weight"
UNIFORM_HALF = SparsityConfig(method="omp", sparsity=0.5, distribution="uniform")


def _config():
    return BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def base_pruned(tmp_path_factory):
    """A bare `BertModel` checkpoint pruned to 50%: its masks are named `encoder.layer...`."""
    root = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    BertModel(_config()).save_pretrained(root / "base")
    prune_checkpoint(str(root / "base"), str(root / "pruned"), UNIFORM_HALF, progress=False)
    return str(root / "pruned")


@pytest.fixture(scope="module")
def task_pruned(tmp_path_factory):
    """A `BertForSequenceClassification` pruned to 50%: its masks are named `bert.encoder.layer...`."""
    root = tmp_path_factory.mktemp("task")
    tiny_bert().save_pretrained(root / "task")
    prune_checkpoint(str(root / "task"), str(root / "pruned"), UNIFORM_HALF, progress=False)
    return str(root / "pruned")


def _file_masks(folder):
    return read_masks(os.path.join(folder, MASKS_FILE))


def _assert_masks_hold(model, masks: dict, prefix_change):
    """Every weight named in `masks` (renamed by `prefix_change`) is zero exactly where its mask prunes."""
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        weight = params[prefix_change(name)]
        assert bool((weight[~keep] == 0).all()), name
        assert int((~keep).sum()) == keep.numel() // 2, name


def _fixed_trainer(model, out, **overrides):
    args = training_args(out, max_steps=4, **overrides)
    return SparseTrainer(model=model, args=args, train_dataset=ToyClassification(),
                         sparsity_config=SparsityConfig(method="fixed"))


def test_the_renaming_adds_or_strips_the_prefix_and_refuses_ambiguity():
    task = ["bert." + LAYER0_QUERY, "bert.encoder.layer.1.output.dense.weight"]
    base = [LAYER0_QUERY, "encoder.layer.1.output.dense.weight"]
    assert mask_renaming(base, task, "bert").renamed == dict(zip(base, task))
    back = mask_renaming(task + ["classifier.weight"], base, "bert")
    assert back.renamed == dict(zip(task, base)) and back.dropped_heads == ["classifier.weight"]
    assert mask_renaming(task, task, "bert").renamed == dict(zip(task, task))
    with pytest.raises(ValueError, match="both name"):
        mask_renaming([LAYER0_QUERY, "bert." + LAYER0_QUERY], task, "bert")
    with pytest.raises(ValueError, match="masks for parameters that are not selected.*bert.encoder.layer.7"):
        mask_renaming(["bert.encoder.layer.7.output.dense.weight"], base, "bert").check("masks file")
    # a bare name that matches nothing is not a head of the source: an error, not a silent drop
    with pytest.raises(ValueError, match="not selected.*pooler"):
        mask_renaming(["pooler.dense.weight"], task, "bert").check("masks file")


def test_fixed_trains_a_task_head_on_a_pruned_base_checkpoint(tmp_path, base_pruned):
    model = AutoModelForSequenceClassification.from_pretrained(base_pruned, num_labels=2)
    trainer = _fixed_trainer(model, tmp_path / "run")
    trainer.train()
    masks = _file_masks(base_pruned)
    _assert_masks_hold(trainer.model, masks, lambda n: "bert." + n)
    kept = trainer.sparsity_callback.masks.mask_dict()
    assert sorted(kept) == sorted("bert." + n for n in masks)
    assert all(torch.equal(kept["bert." + n], m) for n, m in masks.items())


def test_fixed_trains_a_bare_model_on_a_pruned_task_checkpoint(tmp_path, task_pruned):
    model = AutoModel.from_pretrained(task_pruned)
    assert isinstance(model, BertModel)
    out = tmp_path / "run"
    model.train()
    args = training_args(out, max_steps=2)
    trainer = SparseTrainer(model=model, args=args, train_dataset=ToyClassification(),
                            sparsity_config=SparsityConfig(method="fixed"),
                            compute_loss_func=lambda outputs, labels, num_items_in_batch=None:
                            outputs.last_hidden_state.pow(2).mean())
    trainer.train()
    _assert_masks_hold(trainer.model, _file_masks(task_pruned), lambda n: n.removeprefix("bert."))


def test_resume_of_a_fixed_run_under_a_task_head_ends_where_an_uninterrupted_run_does(tmp_path, base_pruned):
    def run(out, resume=None):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(base_pruned, num_labels=2)
        trainer = _fixed_trainer(model, out, save_strategy="steps", save_steps=2)
        trainer.train(resume_from_checkpoint=resume)
        return trainer.model

    full = run(tmp_path / "full")
    resumed = run(tmp_path / "part", resume=str(tmp_path / "full" / "checkpoint-2"))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    _assert_masks_hold(resumed, _file_masks(base_pruned), lambda n: "bert." + n)


def test_maskset_load_maps_both_directions_and_drops_only_head_masks(base_pruned, task_pruned, caplog, tmp_path):
    task_model = AutoModelForSequenceClassification.from_pretrained(base_pruned, num_labels=2)
    masks = MaskSet.for_model(task_model)
    masks.load(os.path.join(base_pruned, MASKS_FILE))
    assert sorted(masks.masks) == sorted("bert." + n for n in _file_masks(base_pruned))

    bare = AutoModel.from_pretrained(task_pruned)
    masks = MaskSet.for_model(bare)
    masks.load(os.path.join(task_pruned, MASKS_FILE))
    assert sorted(masks.masks) == sorted(n.removeprefix("bert.") for n in _file_masks(task_pruned))

    # masks saved from a task model with its head selected: the head's mask has no counterpart in a bare model
    task = tiny_bert()
    full = MaskSet.for_model(task, selection="release-embeddings-heads")
    full.update({n: torch.rand(p.shape) > 0.5 for n, p in full.named_parameters()})
    assert "classifier.weight" in full.masks
    full.save(str(tmp_path / "heads.safetensors"))
    bare_full = MaskSet.for_model(BertModel(task.config), selection="release-embeddings-heads")
    with caplog.at_level(logging.INFO, logger="smc_hf"):
        bare_full.load(str(tmp_path / "heads.safetensors"))
    assert "classifier.weight" not in bare_full.masks and len(bare_full.masks) == len(full.masks) - 1
    assert any("classifier.weight" in r.getMessage() and "head" in r.getMessage() for r in caplog.records)
    # a body weight without a counterpart is an error, not a drop
    torch.manual_seed(0)
    shallow = BertModel(BertConfig(**{**_config().to_dict(), "num_hidden_layers": 1}))
    with pytest.raises(ValueError, match="not selected.*bert.encoder.layer.1"):
        MaskSet.for_model(shallow).load(os.path.join(task_pruned, MASKS_FILE))


def _lora(model):
    return get_peft_model(model, LoraConfig(r=4, target_modules=["query", "value"], init_lora_weights=False,
                                            lora_dropout=0.0))


def _batch():
    gen = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(6, 64, (4, 12), generator=gen), "attention_mask": torch.ones(4, 12, dtype=torch.long)}


@pytest.mark.parametrize("direction", ["base_under_head", "task_as_base"])
def test_mask_lora_and_merge_sparse_find_the_masks_across_the_prefix(direction, base_pruned, task_pruned):
    if direction == "base_under_head":
        folder, load, rename = base_pruned, AutoModelForSequenceClassification, lambda n: "bert." + n
    else:
        folder, load, rename = task_pruned, AutoModel, lambda n: n.removeprefix("bert.")
    masks = _file_masks(folder)
    peft_model = _lora(load.from_pretrained(folder))
    assert mask_lora(peft_model) == 4  # query and value of both layers
    merged, report = merge_sparse(peft_model, inputs=_batch())
    assert report.max_error < 1e-5
    _assert_masks_hold(merged, masks, rename)

    peft_model = _lora(load.from_pretrained(folder))
    merged, report = merge_sparse(peft_model, masks=os.path.join(folder, MASKS_FILE))
    assert report.max_error > 0 and report.sparsity_after == 0.5
    _assert_masks_hold(merged, masks, rename)
