"""SNIP: scores are |grad * w| summed over batches, the kept set is the global top-k, the mask stays fixed."""

import pytest
import torch
from torch.utils.data import DataLoader

from smc_hf import SparseTrainer, SparsityConfig, prune_model
from smc_hf.core.context import PruneContext
from smc_hf.core.criteria import CRITERIA
from smc_hf.core.masks import MaskSet
from tests.helpers import ToyClassification, tiny_roberta, training_args


def _hand_scores(batches: int) -> dict[str, torch.Tensor]:
    model = tiny_roberta()
    model.eval()
    params = MaskSet.for_model(model).params
    scores = {n: torch.zeros_like(p) for n, p in params.items()}
    for i, batch in enumerate(DataLoader(ToyClassification(n=16), batch_size=4)):
        if i == batches:
            break
        model.zero_grad()
        model(**batch).loss.backward()
        for name, param in params.items():
            scores[name] += (param.grad * param).abs()
    return scores


def test_scores_equal_abs_grad_times_weight_summed_over_batches():
    expected = _hand_scores(batches=2)
    model = tiny_roberta()
    loader = DataLoader(ToyClassification(n=16), batch_size=4)
    ctx = PruneContext(model=model, masks=MaskSet.for_model(model), dataloader=loader)
    got = CRITERIA.get("snip")(ctx, batches=2)
    assert list(got) == list(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=0)
    assert not torch.equal(got[next(iter(got))], _hand_scores(batches=1)[next(iter(got))])


def test_prune_model_keeps_the_hand_computed_global_top_k():
    expected = _hand_scores(batches=2)
    flat = torch.cat([s.flatten() for s in expected.values()])
    keep = flat.numel() - round(0.6 * flat.numel())
    ranked = flat.sort(descending=True).values
    assert ranked[keep - 1] != ranked[keep], "a tie at the threshold would make the top-k ambiguous"
    expected_mask = torch.zeros_like(flat, dtype=torch.bool)
    expected_mask[flat.topk(keep).indices] = True

    model = tiny_roberta()
    cfg = SparsityConfig(method="snip", sparsity=0.6, snip_batches=2)
    masks = prune_model(model, cfg, dataloader=DataLoader(ToyClassification(n=16), batch_size=4))
    assert torch.equal(torch.cat([masks.masks[n].flatten() for n in expected]), expected_mask)
    assert sum(masks.weight_zeros().values()) == round(0.6 * flat.numel())


def test_scoring_leaves_no_gradients_and_restores_mode_and_frozen_weights():
    model = tiny_roberta()
    model.train()
    frozen = next(p for n, p in model.named_parameters() if n.endswith("query.weight"))
    frozen.requires_grad_(False)
    loader = DataLoader(ToyClassification(n=8), batch_size=4)
    prune_model(model, SparsityConfig(method="snip", sparsity=0.5), dataloader=loader)
    assert all(p.grad is None for p in model.parameters())
    assert model.training and not frozen.requires_grad
    assert sum(p.requires_grad for p in model.parameters()) == len(list(model.parameters())) - 1


def test_prune_model_needs_calibration_batches():
    with pytest.raises(ValueError, match="pass dataloader= to prune_model"):
        prune_model(tiny_roberta(), SparsityConfig(method="snip", sparsity=0.5))
    with pytest.raises(ValueError, match="the dataloader has 2 batches, 3 were asked for"):
        prune_model(tiny_roberta(), SparsityConfig(method="snip", sparsity=0.5, snip_batches=3),
                    dataloader=DataLoader(ToyClassification(n=8), batch_size=4))
    with pytest.raises(TypeError, match="dicts of model inputs"):
        prune_model(tiny_roberta(), SparsityConfig(method="snip", sparsity=0.5), dataloader=[(torch.ones(2, 3),)])


def _train(tmp_path, cfg, max_steps=4):
    trainer = SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path, max_steps=max_steps),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    method = trainer.sparsity_callback.method
    begin = method.on_round_begin
    seen = {}

    def record(ctx):
        begin(ctx)
        seen["digest"] = ctx.masks.digest()
    method.on_round_begin = record
    trainer.train()
    return trainer, seen["digest"]


def test_in_training_the_mask_is_fixed_exact_and_reproducible(tmp_path):
    cfg = SparsityConfig(method="snip", sparsity=0.7, snip_batches=2)
    trainer, initial = _train(tmp_path / "a", cfg)
    masks = trainer.sparsity_callback.masks
    assert masks.digest() == initial
    assert sum(masks.weight_zeros().values()) == round(0.7 * masks.numel())
    again, _ = _train(tmp_path / "b", cfg)
    assert again.sparsity_callback.masks.digest() == initial
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), again.model.parameters()))
    _, other_seed = _train(tmp_path / "c", SparsityConfig(method="snip", sparsity=0.7, snip_batches=2, mask_seed=5), 1)
    assert other_seed != initial  # another seed draws other calibration batches


def test_too_few_training_batches_fail_before_the_first_step(tmp_path):
    with pytest.raises(ValueError, match="the dataloader has 8 batches, 9 were asked for"):
        _train(tmp_path, SparsityConfig(method="snip", sparsity=0.5, snip_batches=9))
