"""oBERT on a least-squares problem: the pruned set and the weight update are exact OBS's; block size 1 is
the diagonal Fisher; `obert` is the release's one-shot After variant (diagonal Fisher over one full pass, mask
only, then re-training); `obert_gradual` reaches the target exactly and reproducibly in training."""

import pytest
import torch
from torch import nn

from smc_hf import SparseTrainer, SparsityConfig, prune_model
from smc_hf.core.masks import unwrap_optimizer
from tests.helpers import ToyClassification, tiny_roberta, training_args

DAMP = 1e-7


class LeastSquares(nn.Module):
    """loss = 0.5 * ||W x - y||^2 for one example, so a batch's gradient is (W x - y) x^T."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 3, bias=False)

    def forward(self, x, labels):
        return {"loss": 0.5 * ((self.layer(x) - labels) ** 2).sum()}


def _data(m=32):
    gen = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(4, generator=gen), "labels": torch.randn(3, generator=gen)} for _ in range(m)]


def _by_hand(model, data, blocks):
    """Flattened weights, and per block (index list): its empirical Fisher F = damp*I + mean g g^T, in float64."""
    w = model.layer.weight.detach().double()
    grads = torch.stack([torch.outer(w @ b["x"].double() - b["labels"].double(), b["x"].double()).flatten()
                         for b in data])
    fisher = [grads[:, idx].T @ grads[:, idx] / len(data) + DAMP * torch.eye(len(idx), dtype=torch.float64)
              for idx in blocks]
    return w.flatten(), grads, fisher


def _obert(sparsity, block_size, update=True):
    model = LeastSquares()
    cfg = SparsityConfig(method="obert", sparsity=sparsity, obert_block_size=block_size, obert_num_grads=32,
                         obert_weight_update=update)
    masks = prune_model(model, cfg, dataloader=_data())
    return model.layer.weight.detach().double().flatten(), masks.masks["layer.weight"].flatten()


def test_one_block_prunes_the_weight_exact_obs_prunes_with_its_update():
    w, _, (fisher,) = _by_hand(LeastSquares(), _data(), [list(range(12))])
    inverse = torch.linalg.inv(fisher)
    saliency = w**2 / (2 * inverse.diagonal())
    q = int(saliency.argmin())
    expected = w - w[q] / inverse[q, q] * inverse[:, q]  # Hassibi & Stork's OBS step
    got, keep = _obert(1 / 12, block_size=12)
    assert torch.equal(keep, torch.arange(12) != q)
    torch.testing.assert_close(got, expected.float().double(), rtol=1e-4, atol=1e-6)
    assert got[q] == 0 and not torch.equal(got[keep], w[keep])


def test_one_block_multi_weight_update_is_the_obs_formula_and_the_constrained_minimum():
    w, _, (fisher,) = _by_hand(LeastSquares(), _data(), [list(range(12))])
    inverse = torch.linalg.inv(fisher)
    saliency = w**2 / (2 * inverse.diagonal())
    pruned = saliency.argsort()[:6]
    kept = saliency.argsort()[6:]
    obs = w - inverse[:, pruned] @ torch.linalg.solve(inverse[pruned][:, pruned], w[pruned])
    constrained = torch.zeros_like(w)  # argmin (w' - w)^T F (w' - w) subject to w'_Q = 0
    constrained[kept] = w[kept] + torch.linalg.solve(fisher[kept][:, kept], fisher[kept][:, pruned] @ w[pruned])
    torch.testing.assert_close(obs, constrained)
    got, keep = _obert(0.5, block_size=12)
    assert set(torch.nonzero(~keep).flatten().tolist()) == set(pruned.tolist())
    torch.testing.assert_close(got, constrained, rtol=1e-4, atol=1e-6)


def test_block_size_one_is_the_diagonal_fisher_saliency_without_compensation():
    w, grads, _ = _by_hand(LeastSquares(), _data(), [])
    saliency = w**2 * (DAMP + (grads**2).mean(0)) / 2
    expected_keep = torch.ones(12, dtype=torch.bool)
    expected_keep[saliency.argsort()[:5]] = False
    got, keep = _obert(5 / 12, block_size=1)
    assert torch.equal(keep, expected_keep)
    assert torch.equal(got[keep], w[keep]) and bool((got[~keep] == 0).all())


def test_blocks_that_do_not_divide_the_layer_are_handled_block_by_block():
    blocks = [list(range(0, 5)), list(range(5, 10)), [10, 11]]
    w, _, fishers = _by_hand(LeastSquares(), _data(), blocks)
    saliency, expected = torch.empty(12, dtype=torch.float64), torch.zeros(12, dtype=torch.float64)
    for idx, fisher in zip(blocks, fishers):
        saliency[idx] = w[idx] ** 2 / (2 * torch.linalg.inv(fisher).diagonal())
    pruned = set(saliency.argsort()[:6].tolist())
    for idx, fisher in zip(blocks, fishers):
        q = [i for i, j in enumerate(idx) if j in pruned]
        r = [i for i, j in enumerate(idx) if j not in pruned]
        wb = w[idx]
        if r:
            expected[[idx[i] for i in r]] = wb[r] + torch.linalg.solve(fisher[r][:, r], fisher[r][:, q] @ wb[q])
    got, keep = _obert(0.5, block_size=5)
    assert set(torch.nonzero(~keep).flatten().tolist()) == pruned
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def _train(tmp_path, cfg):
    trainer = SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path, max_steps=6),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    trainer.train()
    return trainer


def test_gradual_training_reaches_the_target_exactly_and_reproducibly(tmp_path):
    cfg = SparsityConfig(method="obert_gradual", sparsity=0.6, obert_num_grads=4, obert_block_size=8, update_every=2)
    first = _train(tmp_path / "a", cfg)
    masks = first.sparsity_callback.masks
    assert sum(masks.weight_zeros().values()) == round(0.6 * masks.numel())
    state = unwrap_optimizer(first.optimizer).state
    for name, mask in masks.masks.items():
        for value in state[masks.params[name]].values():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert bool((value[~mask] == 0).all())
    second = _train(tmp_path / "b", cfg)
    assert second.sparsity_callback.masks.digest() == masks.digest()
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), second.model.parameters()))


def test_one_shot_needs_calibration_batches():
    with pytest.raises(ValueError, match="pass dataloader= to prune_model"):
        prune_model(tiny_roberta(), SparsityConfig(method="obert", sparsity=0.5))


def test_chunked_factorisation_and_update_agree_with_one_chunk():
    from smc_hf.core.fisher import BlockFisher

    gen = torch.Generator().manual_seed(2)
    weight, grads = torch.randn(6, 7, generator=gen), torch.randn(5, 6, 7, generator=gen)
    keep = torch.rand(6, 7, generator=gen) > 0.4
    results = []
    for chunk in (1, 3, 4096):
        fisher = BlockFisher({"w": weight.shape}, 4, DAMP, chunk=chunk)
        for g in grads:
            fisher.add({"w": g})
        fisher.finalize()
        updated = weight.clone()
        fisher.obs_update_("w", updated, keep)
        results.append((fisher.saliency("w", weight), updated))
    for saliency, updated in results[:-1]:
        assert torch.equal(saliency, results[-1][0]) and torch.equal(updated, results[-1][1])
    assert bool((results[-1][1][~keep] == 0).all()) and not torch.equal(results[-1][1][keep], weight[keep])


class _CountingBatches(list):
    """A list of batches that counts how many were read."""

    read = 0

    def __iter__(self):
        for batch in super().__iter__():
            self.read += 1
            yield batch


def test_release_one_shot_variant_masks_by_the_diagonal_fisher_of_one_full_pass_without_update():
    """The defaults of `obert` are the release's: B = 1, so [F^-1]_qq = 1 / (damp + mean_i g_qi^2) and the score is
    w_q^2 (damp + mean_i g_qi^2) / 2, with g over every batch of one pass; the kept weights are unchanged."""
    data = _CountingBatches(_data(1100))  # more than the gradual variant's 1024 samples: all are read
    model = LeastSquares()
    w, grads, _ = _by_hand(model, data, [])
    saliency = w**2 * (DAMP + (grads**2).mean(0)) / 2
    expected_keep = torch.ones(12, dtype=torch.bool)
    expected_keep[saliency.argsort()[:7]] = False
    data.read = 0
    masks = prune_model(model, SparsityConfig(method="obert", sparsity=7 / 12), dataloader=data)
    assert data.read == 1100
    got = model.layer.weight.detach().double().flatten()
    assert torch.equal(masks.masks["layer.weight"].flatten(), expected_keep)
    assert torch.equal(got[expected_keep], w[expected_keep]) and bool((got[~expected_keep] == 0).all())


def test_variants_are_after_and_during_with_their_defaults():
    from smc_hf.methods import build_method

    after = build_method(SparsityConfig(method="obert", sparsity=0.5))
    assert (after.timing, after.num_rounds, after.block_size, after.num_grads, after.weight_update) == (
        "after", 2, 1, None, False)
    gradual = build_method(SparsityConfig(method="obert_gradual", sparsity=0.5))
    assert (gradual.timing, gradual.num_rounds, gradual.block_size, gradual.num_grads, gradual.weight_update) == (
        "during", 1, 50, 1024, True)
    switched = build_method(SparsityConfig(method="obert", sparsity=0.5, obert_weight_update=True))
    assert switched.weight_update
    assert build_method(SparsityConfig(method="obert", sparsity=0.5, skip_dense_phase=True)).num_rounds == 1


def test_after_variant_trains_dense_then_prunes_the_fine_tuned_weights_and_retrains(tmp_path):
    cfg = SparsityConfig(method="obert", sparsity=0.5)
    trainer = SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path / "out", max_steps=4),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    trainer.train()
    assert (tmp_path / "out" / "round-0" / "model.safetensors").is_file()
    masks = trainer.sparsity_callback.masks
    assert sum(int((~m).sum()) for m in masks.masks.values()) == round(0.5 * masks.numel())
    assert sum(masks.weight_zeros().values()) >= round(0.5 * masks.numel())
