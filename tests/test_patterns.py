"""N:M patterns: exact N of every M along the input dimension, for every criterion, through training and the report."""

import json
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2Model, HfArgumentParser

import run_glue_like
from smc_hf import MASKS_FILE, SparseTrainer, SparsityConfig, prune_model, sparsity_report
from smc_hf.cli.prune import main as prune_main
from smc_hf.core.patterns import NMPattern, check_nm, input_dims, nm_keep_mask
from smc_hf.io.mask_file import read_masks
from smc_hf.io.sparsity_block import read_sparsity_block
from smc_hf.pruning.sparse_folder import save_sparse_pretrained
from tests.helpers import ToyClassification, tiny_roberta, training_args


def _reference_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Brute force along the last dim: in each group, keep the n largest, lower index first among equals."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for r in range(scores.shape[0]):
        for g in range(0, scores.shape[1], m):
            ranked = sorted(range(g, g + m), key=lambda j: (-float(scores[r, j]), j))
            for j in ranked[:n]:
                keep[r, j] = True
    return keep


# -- the pattern -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, n, m", [("2:4", 2, 4), ("4:8", 4, 8), (" 1 : 3 ", 1, 3), ("7:16", 7, 16)])
def test_patterns_parse_and_state_their_sparsity(text, n, m):
    pattern = NMPattern.parse(text)
    assert (pattern.n, pattern.m, str(pattern)) == (n, m, f"{n}:{m}")
    assert pattern.sparsity == 1 - n / m


@pytest.mark.parametrize("text, message", [
    ("4:2", "N:M pattern 4:2: N must satisfy 0 < N < M"),
    ("4:4", "N:M pattern 4:4: N must satisfy 0 < N < M"),
    ("0:4", "N:M pattern 0:4: N must satisfy 0 < N < M"),
    ("2-4", "must be written N:M with whole numbers 0 < N < M, such as 2:4 or 4:8; got '2-4'"),
    ("2:4:8", "got '2:4:8'"),
    ("a:b", "got 'a:b'"),
    ("-1:4", "got '-1:4'"),
    (2.5, "got 2.5"),
])
def test_bad_patterns_are_refused_naming_the_value_and_the_rule(text, message):
    with pytest.raises(ValueError) as err:
        NMPattern.parse(text)
    assert message in str(err.value)


# -- the mask ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["2:4", "4:8", "1:4", "3:8"])
def test_mask_keeps_exactly_the_n_best_of_every_group(text):
    pattern = NMPattern.parse(text)
    scores = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    keep = nm_keep_mask(scores, pattern)
    assert keep.dtype == torch.bool and keep.shape == scores.shape
    assert torch.equal(keep, _reference_keep(scores, pattern.n, pattern.m))
    assert keep.view(6, -1, pattern.m).sum(-1).eq(pattern.n).all()
    assert check_nm(keep, pattern).shape == (0, 2)
    assert int(keep.sum()) == 6 * 32 * pattern.n // pattern.m


def test_ties_keep_the_lower_index_and_minus_inf_ranks_last():
    scores = torch.tensor([[5.0, 7.0, 7.0, 1.0, 3.0, 3.0, 3.0, 3.0, 0.0, float("-inf"), 2.0, float("-inf")]])
    keep = nm_keep_mask(scores, NMPattern(1, 4))
    assert keep.nonzero()[:, 1].tolist() == [1, 4, 10]
    keep = nm_keep_mask(scores, NMPattern(2, 4))
    assert keep.nonzero()[:, 1].tolist() == [1, 2, 4, 5, 8, 10]


def test_conv1d_layout_groups_along_dim_0():
    """transformers' Conv1D stores (in, out): its groups run down the columns."""
    scores = torch.randn(16, 12, generator=torch.Generator().manual_seed(1))  # (in, out)
    pattern = NMPattern(2, 4)
    keep = nm_keep_mask(scores, pattern, input_dim=0)
    assert torch.equal(keep, nm_keep_mask(scores.t().contiguous(), pattern).t())
    assert check_nm(keep, pattern, input_dim=0).shape == (0, 2)
    assert keep.view(4, 4, 12).sum(1).eq(2).all()
    assert check_nm(keep, pattern, input_dim=-1).shape[0] > 0, "along the other dimension it is not 2:4"


def test_input_dimension_not_divisible_is_an_error_naming_layer_and_shape():
    with pytest.raises(ValueError, match=r"encoder.fc.weight has shape \(4, 10\), whose input dimension \(10, dim 1\) "
                                         r"is not a multiple of M = 4"):
        nm_keep_mask(torch.randn(4, 10), NMPattern(2, 4), name="encoder.fc.weight")
    with pytest.raises(ValueError, match=r"dim 0\) is not a multiple of M = 8"):
        nm_keep_mask(torch.randn(12, 16), NMPattern(4, 8), input_dim=0)
    with pytest.raises(ValueError, match=r"bias has shape \(16,\); patterns apply to 2-D weight matrices"):
        nm_keep_mask(torch.randn(16), NMPattern(2, 4), name="bias")
    with pytest.raises(ValueError, match="contain NaN"):
        nm_keep_mask(torch.tensor([[1.0, float("nan"), 0.0, 2.0]]), NMPattern(2, 4))


def test_checker_returns_each_violating_group_in_the_weights_layout():
    pattern = NMPattern(2, 4)
    keep = nm_keep_mask(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)), pattern)
    keep[1, 8:12] = True  # 4 kept
    keep[2, 0:4] = False  # 0 kept
    assert check_nm(keep, pattern).tolist() == [[1, 8], [2, 0]]
    assert check_nm(keep, pattern, exact=False).tolist() == [[1, 8]], "fewer than N kept is still N:M-sparse"
    conv = keep.t().contiguous()  # the same groups in Conv1D's (in, out) layout: weight[i:i+4, row]
    assert check_nm(conv, pattern, input_dim=0).tolist() == [[1, 8], [2, 0]]


# -- the config --------------------------------------------------------------------------------------------------

def test_the_pattern_sets_the_sparsity_and_refuses_conflicts():
    assert SparsityConfig(method="omp", pattern="2:4").sparsity == 0.5
    assert SparsityConfig(method="random", pattern="1:4").sparsity == 0.75
    cfg = SparsityConfig(method="omp", sparsity=0.5, pattern=" 4 : 8")
    assert (cfg.pattern, cfg.nm_pattern) == ("4:8", NMPattern(4, 8))
    assert SparsityConfig.from_json_string(cfg.to_json_string()) == cfg
    with pytest.raises(ValueError, match=r"pattern 2:4 prunes exactly 1 - 2/4 = 0.5 of every layer, but sparsity = 0.7"):
        SparsityConfig(method="omp", sparsity=0.7, pattern="2:4")
    with pytest.raises(ValueError, match="distribution = 'global' would be ignored; leave the distribution out"):
        SparsityConfig(method="omp", distribution="global", pattern="2:4")
    with pytest.raises(ValueError, match="N must satisfy 0 < N < M"):
        SparsityConfig(method="omp", pattern="4:2")
    with pytest.raises(ValueError, match="method 'dense' prunes nothing"):
        SparsityConfig(pattern="2:4")
    fixed = SparsityConfig(method="fixed", pattern="2:4")
    assert (fixed.sparsity, fixed.pattern) == (0.0, "2:4")


@pytest.mark.parametrize("method, how", [
    ("gmp", "raises the sparsity of every layer gradually"), ("obert_gradual", "raises the sparsity"),
    ("lth", "prunes a fraction of the remaining weights"), ("rigl", "moves connections anywhere"),
])
def test_methods_whose_sparsity_moves_refuse_a_pattern(method, how):
    sparsity = 0.2 if method == "lth" else 0.5
    with pytest.raises(ValueError, match=f"method '{method}' {how}.*cannot follow.*method 'fixed'"):
        SparsityConfig(method=method, sparsity=sparsity, pattern="2:4")


def test_every_parser_reads_the_pattern(tmp_path):
    (cfg,) = HfArgumentParser(SparsityConfig).parse_args_into_dataclasses(["--sparsity_method", "snip", "--pattern", "2:4"])
    assert (cfg.method, cfg.pattern, cfg.sparsity) == ("snip", "2:4", 0.5)
    (cfg,) = HfArgumentParser(SparsityConfig).parse_args_into_dataclasses(["--method", "omp", "--sparsity_pattern", "4:8"])
    assert cfg.pattern == "4:8"
    _, _, cfg, _ = run_glue_like.parse_args(["--task", "csqa", "--output_dir", str(tmp_path),
                                             "--sparsity_method", "omp_after", "--pattern", "2:4"])
    assert (cfg.method, cfg.pattern, cfg.sparsity) == ("omp_after", "2:4", 0.5)


# -- pruning -----------------------------------------------------------------------------------------------------

def _assert_exact(model, masks, pattern, dims=None):
    dims = dims or input_dims(model, masks.names)
    for name, param in masks.params.items():
        mask = masks.mask(name)
        assert check_nm(mask, pattern, dims[name]).shape[0] == 0, f"{name}: groups not exactly {pattern}"
        assert check_nm(param.detach() != 0, pattern, dims[name], exact=False).shape[0] == 0, name
        assert bool((param.detach()[~mask] == 0).all()), name
        assert int((~mask).sum()) == round(param.numel() * pattern.sparsity), name


@pytest.mark.parametrize("method", ["omp", "random", "snip", "omp_after", "obert"])
def test_every_one_shot_criterion_gives_exact_groups(method):
    model = tiny_roberta()
    pattern = NMPattern(2, 4)
    magnitudes = {n: p.detach().abs().clone() for n, p in model.named_parameters()}
    loader = DataLoader(ToyClassification(n=8), batch_size=4)
    masks = prune_model(model, SparsityConfig(method=method, pattern="2:4"), dataloader=loader)
    _assert_exact(model, masks, pattern)
    if method in ("omp", "omp_after"):
        for name in masks.names:
            assert torch.equal(masks.mask(name), _reference_keep(magnitudes[name], 2, 4)), name


def test_gpt2_conv1d_weights_get_their_groups_along_dim_0():
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    masks = prune_model(model, SparsityConfig(method="omp", pattern="2:4"))
    dims = input_dims(model, masks.names)
    assert dims == {n: 0 for n in masks.names} and "h.0.attn.c_attn.weight" in dims
    _assert_exact(model, masks, NMPattern(2, 4), dims)
    assert check_nm(masks.mask("h.0.attn.c_attn.weight"), NMPattern(2, 4), -1).shape[0] > 0


def test_an_indivisible_layer_fails_before_any_scoring():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(6, 4))

    class Untouchable:
        def __iter__(self):
            raise AssertionError("calibration data was read before the shape check")

    with pytest.raises(ValueError, match=r"1.weight has shape \(4, 6\), whose input dimension \(6, dim 1\)"):
        prune_model(model, SparsityConfig(method="snip", pattern="2:4"), dataloader=Untouchable())
    assert bool((model[0].weight != 0).all()), "nothing may be pruned"


# -- training and the report -------------------------------------------------------------------------------------

def test_a_fixed_nm_mask_survives_training_exactly(tmp_path):
    pattern = NMPattern(2, 4)
    model = tiny_roberta()
    cfg = SparsityConfig(method="omp", pattern="2:4")
    masks = prune_model(model, cfg)
    save_sparse_pretrained(model, tmp_path / "pruned", masks, cfg)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    trainer = SparseTrainer(model=loaded, args=training_args(tmp_path / "t", max_steps=6, learning_rate=1e-2),
                            train_dataset=ToyClassification(n=24), sparsity_config=SparsityConfig(method="fixed",
                                                                                                 pattern="2:4"))
    before = {n: p.detach().clone() for n, p in loaded.named_parameters()}
    trainer.train()
    trained = trainer.sparsity_callback.masks
    assert trained.digest() == masks.digest()
    _assert_exact(loaded, trained, pattern)
    state = trainer.optimizer.state
    for name, mask in trained.masks.items():
        param = trained.params[name]
        assert not torch.equal(param.detach(), before[name]), f"{name} did not train"
        for key, value in state[param].items():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert bool((value[~mask] == 0).all()), f"optimizer {key} of {name}"
    report = trainer.sparsity_report()
    assert report.pattern == "2:4" and report.pattern_verified
    trainer.save_model()
    block = read_sparsity_block(str(tmp_path / "t"))
    assert (block["pattern"], block["pattern_verified"], block["pattern_violations"]) == ("2:4", True, {})


def test_fixed_with_a_pattern_refuses_a_mask_that_breaks_it(tmp_path):
    model = tiny_roberta()
    cfg = SparsityConfig(method="omp", sparsity=0.5)
    save_sparse_pretrained(model, tmp_path / "pruned", prune_model(model, cfg), cfg)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    trainer = SparseTrainer(model=loaded, args=training_args(tmp_path / "t", max_steps=1),
                            train_dataset=ToyClassification(n=4),
                            sparsity_config=SparsityConfig(method="fixed", pattern="2:4"))
    with pytest.raises(ValueError, match=r"method 'fixed' with pattern 2:4: the mask keeps more than 2 of 4 weights "
                                         r"in \d+ groups"):
        trainer.train()


def test_the_report_checks_every_group_of_the_weights():
    model = tiny_roberta()
    cfg = SparsityConfig(method="omp", pattern="2:4")
    prune_model(model, cfg)
    report = sparsity_report(model, config=cfg)
    assert report.pattern_verified and "N:M pattern 2:4: verified" in report.to_markdown()
    assert report.to_dict()["pattern_verified"] is True
    name = "roberta.encoder.layer.1.output.dense.weight"
    weight = dict(model.named_parameters())[name]
    with torch.no_grad():
        row = weight[3, :4]
        row[row == 0] = 1.0  # the first group of row 3 now keeps 4 of 4
    report = sparsity_report(model, config=cfg)
    assert report.pattern_verified is False and report.pattern_violations[name] == 1
    assert sum(report.pattern_violations.values()) == 1
    assert f"NOT verified, 1 groups keep more than 2 of 4 in 1 modules: {name} (1)" in report.to_markdown()
    assert sparsity_report(model, config=SparsityConfig(method="omp", sparsity=0.5)).pattern is None


def test_smc_prune_writes_a_verified_nm_folder_and_refuses_streaming(tmp_path, capsys):
    source = tmp_path / "src"
    tiny_roberta().save_pretrained(source)
    out = tmp_path / "out"
    assert prune_main([str(source), "--method", "omp", "--pattern", "2:4", "--output", str(out),
                       "--progress", "false"]) == 0
    assert "N:M pattern 2:4: verified" in capsys.readouterr().out
    block = read_sparsity_block(str(out))
    assert (block["pattern"], block["pattern_verified"], block["distribution"], block["target"]) == (
        "2:4", True, None, 0.5)
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    dims = input_dims(loaded, block["modules"])
    for name, mask in read_masks(os.path.join(out, MASKS_FILE)).items():
        assert check_nm(mask, NMPattern(2, 4), dims[name]).shape[0] == 0, name
    card = (out / "README.md").read_text()
    assert "N:M pattern `2:4`" in card and "N:M pattern 2:4: verified" in card
    assert prune_main([str(source), "--method", "omp", "--pattern", "2:4", "--streaming", "--output",
                       str(tmp_path / "s"), "--progress", "false"]) == 1
    assert "streaming pruning does not apply N:M patterns" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["sparsity"]["pattern"] == "2:4"
