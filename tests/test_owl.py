"""OWL: outlier ratios per transformer block, block sparsities spread by lambda, exact counts, lowest scores pruned.

The scores are built so that every outlier ratio, and from it every count, is known by hand (see each test)."""

import pytest
import torch
from transformers import HfArgumentParser

from smc_hf import SparsityConfig, prune_model
from smc_hf.cli.prune import main as prune_main
from smc_hf.core.allocation import DISTRIBUTIONS, allocate
from smc_hf.core.owl import block_of, block_sparsities, exact_counts, outlier_ratio, owl_prune_counts
from smc_hf.io.sparsity_block import read_sparsity_block
from tests.helpers import tiny_roberta


def _layer(outliers=(), n=100):
    """n distinct scores 1.00, 1.01, ... (mean about 1.5: none above 5x the mean), then the given outliers written
    over the last positions. The lowest scores are the first positions."""
    scores = 1.0 + torch.arange(n, dtype=torch.float32) / n
    for i, value in enumerate(outliers):
        scores[n - 1 - i] = value
    return scores.reshape(10, n // 10)


def _three_blocks():
    # block 0: 2 of 100 scores are 100, mean ~3.5, threshold ~17.5: D = 0.02
    # block 1: no outlier:                                        D = 0
    # block 2: 1 score of 1000, mean ~11.5, threshold ~57:        D = 0.01
    return {"layers.0.w": _layer([100.0, 100.0]), "layers.1.w": _layer(), "layers.2.w": _layer([1000.0])}


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    scores = _three_blocks()
    assert [outlier_ratio([s], 5.0) for s in scores.values()] == [0.02, 0.0, 0.01]
    assert outlier_ratio([scores["layers.1.w"]], 1.0) == 0.5  # above the mean 1.495: 1.50 ... 1.99
    with_pruned = scores["layers.0.w"].clone().reshape(-1)
    with_pruned[:50] = float("-inf")  # already pruned: out of the mean and the count
    assert outlier_ratio([with_pruned], 5.0) == 2 / 50


def test_hand_computed_counts_and_masks():
    """r = (D - 0) / 0.02 * 2 * 0.08 = [0.16, 0, 0.08], mean 0.08, s_b = 0.5 - (r - 0.08) = [0.42, 0.58, 0.50]."""
    scores = _three_blocks()
    assert owl_prune_counts(scores, 0.5) == {"layers.0.w": 42, "layers.1.w": 58, "layers.2.w": 50}
    masks = allocate({n: s.clone() for n, s in scores.items()}, 0.5, "owl")
    for name, pruned in (("layers.0.w", 42), ("layers.1.w", 58), ("layers.2.w", 50)):
        expected = torch.arange(100).reshape(10, 10) >= pruned  # the lowest scores are the first positions
        assert torch.equal(masks[name], expected), name
    # lambda 0.04 halves the spread: s_b = 0.5 - ([0.08, 0, 0.04] - 0.04)
    assert owl_prune_counts(scores, 0.5, lam=0.04) == {"layers.0.w": 46, "layers.1.w": 54, "layers.2.w": 50}
    # blocks 0 and 2 alone: M = 5 gives D = [0.02, 0.01], so block 0 is denser; M = 50 (thresholds ~173 and ~574)
    # leaves only the 1000 an outlier, D = [0, 0.01], and the order flips: r = [0, 0.16], s_b = 0.5 -+ 0.08
    two = {"layers.0.w": scores["layers.0.w"], "layers.2.w": scores["layers.2.w"]}
    assert owl_prune_counts(two, 0.5) == {"layers.0.w": 42, "layers.2.w": 58}
    assert owl_prune_counts(two, 0.5, threshold_m=50.0) == {"layers.0.w": 58, "layers.2.w": 42}


def test_block_mean_is_weighted_by_size_so_the_total_is_exact():
    """Block A (100 weights, D = 0.02) and B (300, D = 0): r = [0.16, 0], size-weighted mean 0.04,
    s = 0.5 - (r - 0.04) = [0.38, 0.54]: 38 + 162 = 200 = 0.5 * 400. (The plain mean, 0.08, would give
    42 + 174 = 216.)"""
    scores = {"a.0.w": _layer([100.0, 100.0]), "b.0.w": torch.cat([_layer(), _layer(), _layer()])}
    assert owl_prune_counts(scores, 0.5) == {"a.0.w": 38, "b.0.w": 162}


def test_weights_of_one_block_share_its_ratio_and_sparsity():
    """Block 0 holds a 100-weight q with two outliers of 100 and a 200-weight fc without: the mean of all 300 is
    ~2.15, so D = 2/300 (q alone would have 0.02, fc 0); block 1 (100 weights) D = 0. r = [0.16, 0], mean weighted
    by (300, 100) 0.12, s_b = [0.46, 0.62]: q 46, fc 92 (the same 0.46), block 1 62; 200 in all."""
    scores = {"model.layers.0.q.weight": _layer([100.0, 100.0]), "model.layers.0.fc.weight": _layer(n=200),
              "model.layers.1.q.weight": _layer()}
    assert outlier_ratio(list(scores.values())[:2], 5.0) == 2 / 300
    assert owl_prune_counts(scores, 0.5) == {"model.layers.0.q.weight": 46, "model.layers.0.fc.weight": 92,
                                             "model.layers.1.q.weight": 62}


@pytest.mark.parametrize("name, block", [
    ("roberta.encoder.layer.3.attention.self.query.weight", "roberta.encoder.layer.3"),
    ("model.layers.11.mlp.up_proj.weight", "model.layers.11"), ("h.0.attn.c_attn.weight", "h.0"),
    ("classifier.dense.weight", "classifier.dense.weight"), ("lin2.weight", "lin2.weight"),
    ("0.weight", "0"),
])
def test_blocks_are_name_prefixes_up_to_the_first_integer(name, block):
    assert block_of(name) == block


def test_sparsities_are_clipped_and_the_total_stays_exact():
    """s = 0.06, lambda 0.1: s_b = 0.06 - ([0.2, 0, 0.1] - 0.1) = [-0.04, 0.16, 0.06]; block 0 clips at 0 and the
    shift t with 100 (0.16 + t) + 100 (0.06 + t) = 18 is -0.02: counts 0, 14, 4 = round(0.06 * 300)."""
    assert owl_prune_counts(_three_blocks(), 0.06, lam=0.1) == {"layers.0.w": 0, "layers.1.w": 14, "layers.2.w": 4}
    assert block_sparsities([0.02, 0.0, 0.01], [100, 100, 100], 0.06, 0.1) == pytest.approx([-0.04, 0.16, 0.06])


def test_equal_ratios_give_every_block_the_target():
    scores = {"layers.0.w": _layer(), "layers.1.w": _layer(n=200)}
    assert owl_prune_counts(scores, 0.3) == {"layers.0.w": 30, "layers.1.w": 60}


def test_exact_counts_respect_the_weights_already_pruned():
    assert exact_counts([0.1, 0.5], [100, 100], [30, 0], 60) == [30, 30]
    assert exact_counts([0.25, 0.25, 0.25], [10, 10, 10], [0, 0, 0], 8) == [3, 3, 2]  # 8/3 each: ties by order
    with pytest.raises(ValueError, match="cannot prune 10 weights when at least 30"):
        exact_counts([0.1], [100], [30], 10)
    scores = _three_blocks()
    flat = scores["layers.0.w"].reshape(-1)
    flat[:45] = float("-inf")  # 45 already pruned where OWL alone would prune 42
    counts = owl_prune_counts(scores, 0.5)
    assert counts["layers.0.w"] >= 45 and sum(counts.values()) == 150
    masks = allocate({n: s.clone() for n, s in scores.items()}, 0.5, "owl")
    assert not masks["layers.0.w"].reshape(-1)[:45].any(), "what is pruned stays pruned"


def test_owl_is_a_registered_distribution_with_its_options():
    assert "owl" in DISTRIBUTIONS
    (cfg,) = HfArgumentParser(SparsityConfig).parse_args_into_dataclasses(
        ["--method", "omp", "--sparsity", "0.5", "--distribution", "owl", "--owl_threshold_m", "3",
         "--owl_lambda", "0.1"])
    assert (cfg.distribution, cfg.owl_threshold_m, cfg.owl_lambda) == ("owl", 3.0, 0.1)
    assert SparsityConfig().owl_threshold_m == 5.0 and SparsityConfig().owl_lambda == 0.08
    for kwargs, message in ((dict(owl_threshold_m=0.0), "owl_threshold_m must be > 0"),
                            (dict(owl_lambda=1.0), r"owl_lambda must be in \[0, 1\)"),
                            (dict(owl_lambda=-0.1), r"owl_lambda must be in \[0, 1\)")):
        with pytest.raises(ValueError, match=message):
            SparsityConfig(method="omp", sparsity=0.5, **kwargs)


def test_prune_model_with_owl_is_exact_and_follows_the_options():
    model = tiny_roberta()
    cfg = SparsityConfig(method="omp", sparsity=0.5, distribution="owl", owl_threshold_m=2.0, owl_lambda=0.2)
    magnitudes = {n: p.detach().abs().clone() for n, p in model.named_parameters()}
    masks = prune_model(model, cfg)
    expected = owl_prune_counts({n: magnitudes[n] for n in masks.names}, 0.5, 2.0, 0.2)
    zeros = masks.weight_zeros()
    assert zeros == expected and sum(zeros.values()) == round(0.5 * masks.numel())
    assert len(set(zeros.values())) > 2, "the blocks should differ (ratios differ between the two layers)"


def test_smc_prune_takes_owl_in_memory_and_refuses_it_streaming(tmp_path, capsys):
    source = tmp_path / "src"
    tiny_roberta().save_pretrained(source)
    out = tmp_path / "out"
    assert prune_main([str(source), "--method", "omp", "--sparsity", "0.5", "--distribution", "owl",
                       "--owl_lambda", "0.1", "--output", str(out), "--progress", "false"]) == 0
    block = read_sparsity_block(str(out))
    assert block["distribution"] == "owl"
    assert sum(m["zeros"] for m in block["modules"].values()) == round(0.5 * block["selected_numel"])
    assert prune_main([str(source), "--method", "omp", "--sparsity", "0.5", "--distribution", "owl", "--streaming",
                       "--output", str(tmp_path / "s"), "--progress", "false"]) == 1
    assert "distribution 'owl' needs the model in memory" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
