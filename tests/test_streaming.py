"""Streaming pruning: same masks as in memory, exact counts with ties, resumable, bounded reads, clear errors."""

import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

import smc_hf.pruning.streaming as streaming
from smc_hf import MASKS_FILE, SparsityConfig, prune_model
from smc_hf.core.allocation import ordered_keys, prune_lowest
from smc_hf.io.sparsity_block import read_sparsity_block
from smc_hf.io.mask_file import read_masks
from smc_hf.io.safetensors_io import SafetensorsWriter, TensorInfo
from smc_hf.pruning.streaming import BandThreshold, Scratch, guess_band, prune_checkpoint_streaming
from tests.helpers import tiny_roberta


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 40 elements, so every tensor spans several chunks (tie bookkeeping across chunks)."""
    monkeypatch.setattr(streaming, "CHUNK", 40)


def _checkpoint(path, model=None):
    model = model or tiny_roberta()
    model.save_pretrained(path, max_shard_size="8KB")
    return str(path)


def _quantised_model():
    """Weights on a coarse grid, so thousands of weights tie at any threshold."""
    model = tiny_roberta()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p * 20) / 20)
    return model


@pytest.mark.parametrize("distribution", ["global", "uniform", "erk"])
@pytest.mark.parametrize("quantised", [False, True])
def test_streaming_matches_prune_model_bit_for_bit(tmp_path, distribution, quantised):
    make = _quantised_model if quantised else tiny_roberta
    source = _checkpoint(tmp_path / "src", make())
    cfg = SparsityConfig(method="omp", sparsity=0.6, distribution=distribution)
    report = prune_checkpoint_streaming(source, str(tmp_path / "out"), cfg, progress=False)
    reference = make()
    masks = prune_model(reference, cfg)
    got = read_masks(str(tmp_path / "out" / MASKS_FILE))
    assert set(got) == set(masks.names)
    for name, mask in masks.masks.items():
        assert torch.equal(got[name], mask), name
    pruned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    for name, value in reference.state_dict().items():
        assert torch.equal(pruned.state_dict()[name], value), name
    assert sum(int((~m).sum()) for m in got.values()) == sum(int((~m).sum()) for m in masks.masks.values())
    if distribution == "global":
        assert sum(int((~m).sum()) for m in got.values()) == round(0.6 * masks.numel())
    assert report.target == 0.6
    block = read_sparsity_block(tmp_path / "out")
    for name, module in block["modules"].items():
        assert module["zeros"] == int((pruned.state_dict()[name] == 0).sum()), name
    assert block["streaming"] is True and block["distribution"] == distribution


def _band_masks(keys: dict, k: int, band: tuple[int, int], budget: int = 10**9):
    """Masks from one `BandThreshold` pass over `keys` in pieces of CHUNK, or None when it cannot resolve."""
    finder = BandThreshold(k, *band, budget=budget)
    scratch = Scratch()
    for name, chunk in keys.items():
        for piece in chunk.split(streaming.CHUNK):
            finder.add(piece, scratch)
        finder.close(name)
    found = finder.resolve(list(keys))
    if found is None:
        return None
    threshold, quotas = found
    masks = []
    for name, chunk in keys.items():
        parts, quota = [], quotas[name]
        for piece in chunk.split(streaming.CHUNK):
            keep, quota = streaming.prune_chunk(piece, threshold, quota)
            parts.append(keep)
        masks.append(torch.cat(parts))
    return masks


@pytest.mark.parametrize("kind", ["continuous", "ties", "all_equal", "zeros"])
def test_band_threshold_equals_prune_lowest_or_declines(kind):
    """One pass with a sampled band gives prune_lowest's masks, ties included; a band that misses the k-th key
    or outgrows its budget declines (None) instead of guessing."""
    torch.manual_seed(0)
    make = {
        "continuous": lambda n: torch.randn(n).abs(),
        "ties": lambda n: torch.randint(0, 5, (n,)).float(),
        "all_equal": lambda n: torch.full((n,), 0.25),
        "zeros": lambda n: torch.where(torch.rand(n) < 0.4, 0.0, torch.rand(n)),
    }[kind]
    keys = {n: ordered_keys(make(size)) for n, size in (("a", 3000), ("b", 1777), ("c", 50), ("d", 4096))}
    total = sum(t.numel() for t in keys.values())
    for k in (1, 37, 431, total // 2, total - 5, total):
        samples = [(t[::7].clone(), t.numel()) for t in keys.values()]
        masks = _band_masks(keys, k, guess_band(samples, k, total))
        expected = prune_lowest(list(keys.values()), k)
        if kind == "continuous" and 1 < k < total:
            assert masks is not None, k
        if masks is not None:
            assert all(torch.equal(m, e) for m, e in zip(masks, expected)), k
            assert sum(int((~m).sum()) for m in masks) == k
    all_keys = torch.cat(list(keys.values()))
    kth = int(all_keys.kthvalue(total // 2).values)
    assert _band_masks(keys, total // 2, (kth + 1, kth + 1000)) is None  # band above the k-th key
    assert _band_masks(keys, total // 2, (0, 2**31 - 1), budget=10) is None  # band over budget


@pytest.mark.parametrize("miss", ["band", "budget"])
def test_a_missed_band_falls_back_to_radix_passes_with_the_same_masks(tmp_path, monkeypatch, miss):
    source = _checkpoint(tmp_path / "src", _quantised_model())
    cfg = SparsityConfig(method="omp", sparsity=0.6)
    calls = []
    fallback = streaming._radix_threshold
    monkeypatch.setattr(streaming, "_radix_threshold", lambda *a: calls.append(1) or fallback(*a))
    if miss == "band":
        monkeypatch.setattr(streaming, "guess_band", lambda *a: (0, 1))  # only exact zeros inside
    else:
        monkeypatch.setattr(streaming, "BandThreshold", lambda k, lo, hi, budget: BandThreshold(k, lo, hi, 3))
    prune_checkpoint_streaming(source, str(tmp_path / "out"), cfg, progress=False)
    assert calls == [1]
    got = read_masks(str(tmp_path / "out" / MASKS_FILE))
    for name, mask in prune_model(_quantised_model(), cfg).masks.items():
        assert torch.equal(got[name], mask), name


def test_random_streaming_is_exact_and_reproducible(tmp_path):
    source = _checkpoint(tmp_path / "src")
    cfg = SparsityConfig(method="random", sparsity=0.3, mask_seed=7)
    prune_checkpoint_streaming(source, str(tmp_path / "a"), cfg, progress=False)
    prune_checkpoint_streaming(source, str(tmp_path / "b"), cfg, progress=False)
    a, b = read_masks(str(tmp_path / "a" / MASKS_FILE)), read_masks(str(tmp_path / "b" / MASKS_FILE))
    for name, mask in a.items():
        assert torch.equal(mask, b[name])
        assert int((~mask).sum()) == round(0.3 * mask.numel())  # random defaults to uniform
    weights = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a").state_dict()
    for name, module in read_sparsity_block(tmp_path / "a")["modules"].items():
        assert module["zeros"] == int((weights[name] == 0).sum()) >= round(0.3 * weights[name].numel())
    other = SparsityConfig(method="random", sparsity=0.3, mask_seed=8)
    prune_checkpoint_streaming(source, str(tmp_path / "c"), other, progress=False)
    c = read_masks(str(tmp_path / "c" / MASKS_FILE))
    assert any(not torch.equal(a[n], c[n]) for n in a)


@pytest.mark.parametrize("distribution", ["uniform", "global"])
def test_random_streaming_masks_equal_prune_model_for_the_same_seed(tmp_path, distribution):
    """Both paths draw each layer's scores from a generator seeded by (seed, round, layer name), so the
    masks agree whatever the chunk size and shard layout."""
    source = _checkpoint(tmp_path / "src")
    cfg = SparsityConfig(method="random", sparsity=0.4, distribution=distribution, mask_seed=11)
    prune_checkpoint_streaming(source, str(tmp_path / "out"), cfg, progress=False)
    got = read_masks(str(tmp_path / "out" / MASKS_FILE))
    masks = prune_model(tiny_roberta(), cfg)
    assert set(got) == set(masks.names)
    for name, mask in masks.masks.items():
        assert torch.equal(got[name], mask), name


def test_an_interrupted_run_leaves_no_output_and_resumes_without_redoing_the_passes(tmp_path, monkeypatch):
    source = _checkpoint(tmp_path / "src")
    cfg = SparsityConfig(method="omp", sparsity=0.5)
    out = tmp_path / "out"
    write_shard = streaming._write_shard
    calls = {"shards": 0, "passes": 0}

    def interrupted(*args, **kwargs):
        calls["shards"] += 1
        if calls["shards"] == 3:
            raise KeyboardInterrupt
        return write_shard(*args, **kwargs)

    thresholds = streaming._global_thresholds

    def counted(*args, **kwargs):
        calls["passes"] += 1
        return thresholds(*args, **kwargs)

    monkeypatch.setattr(streaming, "_write_shard", interrupted)
    monkeypatch.setattr(streaming, "_global_thresholds", counted)
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoint_streaming(source, str(out), cfg, progress=False)
    assert not out.exists()
    partial = tmp_path / "out.partial"
    assert sum(n.startswith("model-") and n.endswith(".safetensors") for n in os.listdir(partial)) == 2
    monkeypatch.setattr(streaming, "_write_shard", write_shard)
    prune_checkpoint_streaming(source, str(out), cfg, progress=False)
    assert calls["passes"] == 1 and not partial.exists()
    prune_checkpoint_streaming(source, str(tmp_path / "fresh"), cfg, progress=False)
    for name in os.listdir(tmp_path / "fresh"):
        if name.endswith(".safetensors"):
            resumed, fresh = load_file(out / name), load_file(tmp_path / "fresh" / name)
            assert all(torch.equal(resumed[k], fresh[k]) for k in fresh), name


def test_bad_checkpoints_fail_before_any_output(tmp_path):
    source = _checkpoint(tmp_path / "src")
    cfg = SparsityConfig(method="omp", sparsity=0.5)
    shards = sorted(n for n in os.listdir(source) if n.startswith("model-"))
    data = open(os.path.join(source, shards[-1]), "rb").read()
    with open(os.path.join(source, shards[-1]), "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{shards[-1]}: not a valid safetensors file"):
        prune_checkpoint_streaming(source, str(tmp_path / "out"), cfg, progress=False)
    os.remove(os.path.join(source, shards[-1]))
    with pytest.raises(FileNotFoundError, match=shards[-1]):
        prune_checkpoint_streaming(source, str(tmp_path / "out"), cfg, progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    with pytest.raises(ValueError, match="needs the model in memory"):
        prune_checkpoint_streaming(source, str(tmp_path / "out"), SparsityConfig(method="gmp", sparsity=0.5))


def test_selected_weights_missing_from_the_checkpoint_are_named(tmp_path):
    source = _checkpoint(tmp_path / "src")
    cfg = SparsityConfig(method="omp", sparsity=0.5, targets=[r"classifier\.dense\.weight"])
    prune_checkpoint_streaming(source, str(tmp_path / "ok"), cfg, progress=False)
    assert list(read_masks(str(tmp_path / "ok" / MASKS_FILE))) == ["classifier.dense.weight"]
    with pytest.raises(ValueError, match="no prunable weights selected"):
        prune_checkpoint_streaming(source, str(tmp_path / "bad"), SparsityConfig(
            method="omp", sparsity=0.5, targets=["nothing_matches"]), progress=False)


def test_streaming_writer_checks_what_it_writes(tmp_path):
    plan = [TensorInfo("a", "F32", (2, 3)), TensorInfo("b", "BF16", (4,))]
    path = str(tmp_path / "w.safetensors")
    with SafetensorsWriter(path, plan, {"format": "pt"}) as writer:
        with pytest.raises(ValueError, match="planned F32"):
            writer.write("a", torch.zeros(3, 2))
        with pytest.raises(KeyError, match="not in the planned header"):
            writer.write("c", torch.zeros(1))
        writer.write("b", torch.arange(4, dtype=torch.bfloat16))
        writer.write("a", torch.ones(2, 3))
    state = load_file(path)
    assert torch.equal(state["a"], torch.ones(2, 3)) and torch.equal(state["b"], torch.arange(4, dtype=torch.bfloat16))
    writer = SafetensorsWriter(path, plan)
    writer.write("a", torch.ones(2, 3))
    with pytest.raises(ValueError, match="never written"):
        writer.close()
    assert not os.path.exists(path)


def test_non_finite_weights_are_named(tmp_path):
    model = tiny_roberta()
    with torch.no_grad():
        model.roberta.encoder.layer[1].output.dense.weight[3, 4] = float("nan")
    source = _checkpoint(tmp_path / "src", model)
    for distribution in ("global", "uniform"):
        cfg = SparsityConfig(method="omp", sparsity=0.5, distribution=distribution)
        with pytest.raises(ValueError, match=r"layer\.1\.output\.dense\.weight contains inf or NaN"):
            prune_checkpoint_streaming(source, str(tmp_path / distribution), cfg, progress=False)
        assert not (tmp_path / distribution).exists()
