import math

import pytest
import torch

from smc_hf.core.allocation import allocate, erk_keep_counts, ordered_keys, prune_lowest


def _scores(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(8, 16, generator=gen).abs(), "b": torch.randn(32, 4, generator=gen).abs(),
            "c": torch.randn(5, 7, generator=gen).abs()}


def test_ordered_keys_preserve_float_order_including_negatives_and_infinities():
    values = torch.tensor([float("-inf"), -3.5, -1e-30, 0.0, 1e-30, 2.0, 7.25, float("inf")])
    keys = ordered_keys(values)
    assert torch.equal(torch.argsort(keys), torch.arange(len(values)))


def test_nan_scores_are_an_error():
    with pytest.raises(ValueError, match="NaN"):
        ordered_keys(torch.tensor([1.0, float("nan")]))


def test_global_prunes_exactly_the_smallest_scores():
    scores = _scores()
    masks = allocate(scores, 0.6, "global")
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = round(0.6 * flat.numel())
    threshold = flat.sort().values[k - 1]
    assert sum(int((~m).sum()) for m in masks.values()) == k
    for name, mask in masks.items():
        assert torch.equal(~mask, scores[name] <= threshold)


def test_uniform_prunes_each_layer_to_the_target():
    scores = _scores()
    masks = allocate(scores, 0.3, "uniform")
    for name, mask in masks.items():
        n = mask.numel()
        assert int((~mask).sum()) == round(0.3 * n)
        kept_min = scores[name][mask].min()
        assert bool((scores[name][~mask] <= kept_min).all())


def test_ties_are_broken_by_layer_then_position_and_counts_stay_exact():
    scores = {"a": torch.ones(2, 3), "b": torch.ones(2, 3)}
    masks = allocate(scores, 0.5, "global")
    assert torch.equal(masks["a"], torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(masks["b"], torch.ones(2, 3, dtype=torch.bool))
    masks = prune_lowest([ordered_keys(torch.tensor([1.0, 0.5, 0.5, 0.5, 2.0]))], 2)
    assert masks[0].tolist() == [True, False, False, True, True]


def test_already_pruned_positions_rank_lowest():
    score = torch.tensor([[float("-inf"), 0.1, 5.0, float("-inf")]])
    mask = allocate({"w": score}, 0.5, "global")["w"]
    assert mask.tolist() == [[False, True, True, False]]


def test_erk_keeps_the_exact_total_and_favours_small_layers():
    shapes = [(768, 768), (3072, 768), (768, 3072), (2, 768)]
    counts = erk_keep_counts(shapes, 0.9)
    total = sum(math.prod(s) for s in shapes)
    assert sum(counts) == total - round(0.9 * total)
    densities = [c / math.prod(s) for c, s in zip(counts, shapes)]
    assert densities[3] == 1.0  # the tiny layer would exceed density 1: it is kept dense
    assert densities[0] > densities[1]


def test_erk_masks_match_the_counts():
    scores = _scores()
    masks = allocate(scores, 0.5, "erk")
    counts = erk_keep_counts([tuple(s.shape) for s in scores.values()], 0.5)
    assert [int(m.sum()) for m in masks.values()] == counts


def test_bad_prune_count_is_rejected():
    with pytest.raises(ValueError, match="cannot prune 7 of 6"):
        prune_lowest([torch.zeros(6, dtype=torch.int32)], 7)


def test_global_allocation_reuses_the_score_storage_and_matches_the_copying_path():
    scores = _scores(seed=3)
    copies = {n: s.clone() for n, s in scores.items()}
    total = sum(s.numel() for s in copies.values())
    expected = dict(zip(copies, prune_lowest([ordered_keys(s) for s in copies.values()], round(0.7 * total))))
    masks = allocate(scores, 0.7, "global")
    assert all(torch.equal(masks[n], expected[n]) for n in masks)
    assert torch.equal(scores["a"].view(torch.int32), ordered_keys(copies["a"]))  # the storage now holds keys
    assert torch.equal(ordered_keys(copies["b"]), ordered_keys(copies["b"].clone(), inplace=True))
