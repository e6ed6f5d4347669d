"""Radix selection against a sort-based reference: exact counts, ties by layer then position, every float class."""

import math

import pytest
import torch

from smc_hf.core import allocation
from smc_hf.core.allocation import LayerScores, allocate, erk_keep_counts, ordered_keys, prune_lowest
from smc_hf.core.radix import RadixSelect, keep_mask
from smc_hf.core.rng import LayerDraws

SHAPES = {"a": (8, 16), "b": (32, 4), "c": (5, 7), "d": (1, 1), "e": (64, 33)}


def reference_masks(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Prune the k lowest (key, layer, position) triples: a stable sort of the concatenated keys."""
    keys = torch.cat([ordered_keys(s).reshape(-1).long() for s in scores.values()])
    order = torch.sort(keys, stable=True).indices
    keep = torch.ones(keys.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start:start + s.numel()].view(s.shape)
        start += s.numel()
    return out


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _kinds(seed):
    """Score sets by name: each a dict of float32 tensors shaped like SHAPES."""
    g = _gen(seed)

    def make(fn):
        return {n: fn(s) for n, s in SHAPES.items()}

    tiny = torch.finfo(torch.float32).tiny
    return {
        "random": make(lambda s: torch.randn(s, generator=g).abs()),
        "negative": make(lambda s: torch.randn(s, generator=g) * 3),
        "heavy_ties": make(lambda s: torch.randint(0, 3, s, generator=g).float()),
        "all_equal": make(lambda s: torch.full(s, 0.25)),
        "zeros": make(lambda s: torch.where(torch.rand(s, generator=g) < 0.5, 0.0, -0.0)
                      * torch.randint(0, 2, s, generator=g)),
        "minus_inf": make(lambda s: torch.where(torch.rand(s, generator=g) < 0.4, float("-inf"),
                                                torch.rand(s, generator=g))),
        "denormals": make(lambda s: torch.randint(-4, 5, s, generator=g).float() * tiny / 8),
        "mixed": make(lambda s: torch.tensor([float("-inf"), -1e30, -1.0, -tiny / 4, -0.0, 0.0, tiny / 4, 1.0,
                                              1e30, float("inf")])[torch.randint(0, 10, s, generator=g)]),
    }


def lazy(scores):
    """The same scores as a `LayerScores` (computed again at each access)."""
    def fill(name, out):
        out.copy_(scores[name].reshape(-1))

    return LayerScores({n: tuple(s.shape) for n, s in scores.items()}, {n: s.device for n, s in scores.items()}, fill)


@pytest.fixture(params=["fused", "three_pass"])
def path(request, monkeypatch):
    """Run each test through both selection paths: bucket kept in memory, or read a third time."""
    monkeypatch.setattr(allocation, "_BUCKET_BYTES_PER_WEIGHT", 1e9 if request.param == "fused" else -1.0)
    return request.param


@pytest.mark.parametrize("kind", list(_kinds(0)))
@pytest.mark.parametrize("sparsity", [0.0, 1 / 4096, 0.3, 0.9, 1.0])
def test_global_equals_the_sort_reference(kind, sparsity, path):
    scores = _kinds(1)[kind]
    total = sum(s.numel() for s in scores.values())
    expected = reference_masks(scores, round(sparsity * total))
    for source in (lazy(scores), {n: s.clone() for n, s in scores.items()}):
        masks = allocate(source, sparsity, "global")
        assert list(masks) == list(SHAPES)
        for name in SHAPES:
            assert masks[name].dtype == torch.bool and masks[name].shape == scores[name].shape
            assert torch.equal(masks[name], expected[name]), (kind, sparsity, name)


@pytest.mark.parametrize("kind", list(_kinds(0)))
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_per_layer_distributions_equal_the_sort_reference_per_layer(kind, distribution, path):
    scores = _kinds(2)[kind]
    if distribution == "uniform":
        counts = [round(0.7 * s.numel()) for s in scores.values()]
    else:
        keep = erk_keep_counts([tuple(s.shape) for s in scores.values()], 0.7)
        counts = [s.numel() - c for s, c in zip(scores.values(), keep)]
    copies = {n: s.clone() for n, s in scores.items()}
    for source in (lazy(scores), copies):
        masks = allocate(source, 0.7, distribution)
        for (name, s), k in zip(scores.items(), counts):
            assert torch.equal(masks[name], reference_masks({name: s}, k)[name]), (kind, name)
    assert all(torch.equal(copies[n].view(torch.int32), scores[n].view(torch.int32)) for n in scores)  # untouched


def test_many_layers_of_random_scores_match_the_reference_at_every_count(path):
    g = _gen(5)
    scores = {f"l{i}": torch.rand(int(torch.randint(1, 300, (1,), generator=g)), generator=g) for i in range(40)}
    keys = [ordered_keys(s) for s in scores.values()]
    total = sum(s.numel() for s in scores.values())
    for k in [1, 2, 17, total // 3, total - 1, total]:
        expected = reference_masks(scores, k)
        assert all(torch.equal(m, expected[n]) for m, n in zip(prune_lowest(keys, k), scores))


def test_a_bucket_holding_every_key_takes_the_third_pass_and_stays_exact():
    scores = {"a": torch.full((100,), 3.0), "b": torch.full((50,), 3.0)}
    select = RadixSelect(120)
    for s in scores.values():
        select.add_high(ordered_keys(s))
    select.find_bucket()
    assert select.in_bucket == 150  # 12 B per member would exceed the budget: the 3-pass path runs
    masks = allocate({n: s.clone() for n, s in scores.items()}, 0.8, "global")
    assert int((~masks["a"]).sum()) == 100 and int((~masks["b"]).sum()) == 20
    assert masks["b"][20:].all() and not masks["b"][:20].any()


def test_radix_select_protocol_on_chunks_out_of_order_gives_threshold_and_ties():
    keys = ordered_keys(torch.tensor([5.0, -1.0, 2.0, 2.0, 2.0, 7.0, -1.0, 0.0]))
    chunks = [keys[:3], keys[3:]]
    select = RadixSelect(5)
    for c in reversed(chunks):
        select.add_high(c)
    select.find_bucket()
    for c in chunks:
        select.add_low(c)
    threshold, ties = select.resolve()
    assert threshold == int(ordered_keys(torch.tensor([2.0]))[0]) and ties == 2  # -1, -1, 0, then two 2.0s
    keep, left = keep_mask(chunks[0], threshold, ties)
    assert keep.tolist() == [True, False, False] and left == 1
    keep, left = keep_mask(chunks[1], threshold, left)
    assert keep.tolist() == [False, True, True, False, False] and left == 0


def test_radix_select_rejects_counts_it_cannot_reach():
    with pytest.raises(ValueError, match="k >= 1"):
        RadixSelect(0)
    select = RadixSelect(4)
    select.add_high(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="cannot prune 4 of 3"):
        select.find_bucket()


def test_nan_scores_are_an_error_in_every_path():
    for bad in (float("nan"), -float("nan")):
        scores = {"a": torch.tensor([1.0, bad, -2.0]), "b": torch.ones(2)}
        for distribution in ("global", "uniform"):
            with pytest.raises(ValueError, match="NaN"):
                allocate(lazy(scores), 0.5, distribution)
            with pytest.raises(ValueError, match="NaN"):
                allocate({n: s.clone() for n, s in scores.items()}, 0.5, distribution)


def test_layer_scores_are_recomputed_at_each_access_and_never_cached():
    calls = []
    scores = {"a": torch.rand(6, 5, generator=_gen(0)), "b": torch.rand(9, generator=_gen(1))}

    def fill(name, out):
        calls.append(name)
        out.copy_(scores[name].reshape(-1))

    layers = LayerScores({n: tuple(s.shape) for n, s in scores.items()}, {n: s.device for n, s in scores.items()}, fill)
    assert torch.equal(layers["a"], scores["a"]) and layers["a"] is not layers["a"]
    calls.clear()
    allocate(layers, 0.5, "global")
    assert calls.count("a") in (2, 3) and calls.count("b") == calls.count("a")  # one per selection pass


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 1, 0, 2], [2, 2, 0, 3]])
def test_layer_draws_equal_one_rand_per_layer_in_order_whatever_the_access_order(order):
    sizes = [7, 3000, 1, 513]
    g = torch.Generator().manual_seed(11)
    expected = [torch.rand(n, generator=g) for n in sizes]
    draws = LayerDraws(11, sizes)
    draws.SKIP_CHUNK = 100  # skipping in several chunks
    for i in order:
        assert torch.equal(draws.draw(i, torch.empty(sizes[i])), expected[i])
    gen = draws.generator(1)  # chunked draws of one layer continue the same numbers
    assert torch.equal(torch.cat([torch.rand(1000, generator=gen), torch.rand(2000, generator=gen)]), expected[1])



def _context(seed=3, round_index=1):
    from torch import nn

    from smc_hf.core.context import PruneContext
    from smc_hf.core.masks import MaskSet

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 8), nn.Linear(8, 8).to(torch.bfloat16))
    masks = MaskSet({n: p for n, p in model.named_parameters() if n.endswith("weight")})
    return PruneContext(model=model, masks=masks, seed=seed, round=round_index)


@pytest.mark.parametrize("distribution", ["global", "uniform", "erk"])
def test_magnitude_per_layer_gives_the_masks_of_stored_scores_with_pruned_positions_lowest(distribution):
    from smc_hf.core.criteria import CRITERIA

    ctx = _context()
    first = allocate(CRITERIA.get("magnitude")(ctx), 0.5, distribution)
    ctx.masks.update(first)
    ctx.masks.apply()  # pruned weights are now zero: -inf must still rank them below kept zeros
    stored = {n: p.detach().abs().float().masked_fill(~ctx.masks.mask(n), float("-inf"))
              for n, p in ctx.masks.named_parameters()}
    expected = allocate(stored, 0.8, distribution)
    got = allocate(CRITERIA.get("magnitude")(ctx), 0.8, distribution)
    assert all(torch.equal(got[n], expected[n]) for n in expected)
    assert all(not (got[n] & ~first[n]).any() for n in got)  # monotone: what was pruned stays pruned


@pytest.mark.parametrize("distribution", ["global", "uniform"])
def test_random_scores_are_the_ones_drawn_before_per_layer_scoring(distribution):
    """The numbers of the random criterion before it scored per layer: one generator, one rand per layer."""
    from smc_hf.core.criteria import CRITERIA

    ctx = _context(seed=3, round_index=1)
    gen = torch.Generator().manual_seed(3 * 1000003 + 1)
    stored = {n: torch.rand(p.shape, generator=gen) for n, p in ctx.masks.named_parameters()}
    scores = CRITERIA.get("random")(ctx)
    for name in reversed(list(stored)):  # any order, any number of times
        assert torch.equal(scores[name], stored[name])
    expected = allocate(stored, 0.6, distribution)
    got = allocate(CRITERIA.get("random")(ctx), 0.6, distribution)
    assert all(torch.equal(got[n], expected[n]) for n in expected)
