"""Wanda: the pruned set of every row is the lowest |W_ij| * ||X_j||_2 computed by hand, counts are exact per
row, rows are output units (GPT-2's Conv1D too), and on inputs with outlier columns its output error is below
magnitude pruning's; the `per_row` distribution; as a method in prune_model, SparseTrainer and smc-prune."""

import json
import os

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2Model

from smc_hf import SparseTrainer, SparsityConfig, prune_model
from smc_hf.cli.prune import main
from smc_hf.core.patterns import NMPattern, check_nm
from smc_hf.core.rowwise import per_row
from smc_hf.io.mask_file import MASKS_FILE, read_masks
from tests.helpers import ToyClassification, tiny_roberta, training_args
from tests.task_fixtures import tiny_esm_dir, write_jsonl


class _Wrap(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, input):
        return self.layer(input)


def _outlier_inputs(n=256, columns=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, columns, generator=gen)
    x[:, [2, 9]] *= 30.0  # outlier features, as in LLM activations
    return x


def _prune(layer, x, sparsity=0.5, **options):
    data = [{"input": x[i:i + 32]} for i in range(0, x.shape[0], 32)]
    return prune_model(_Wrap(layer), SparsityConfig(method="wanda", sparsity=sparsity, **options), dataloader=data)


def test_each_row_prunes_its_lowest_weight_times_input_norm():
    x = _outlier_inputs()
    layer = nn.Linear(16, 6, bias=False)
    w = layer.weight.detach().clone()
    masks = _prune(layer, x)
    score = w.abs() * x.square().mean(0).sqrt()
    expected = torch.ones_like(w, dtype=torch.bool)
    expected.scatter_(1, score.argsort(1)[:, :8], False)
    assert torch.equal(masks.masks["layer.weight"], expected)
    assert torch.equal(layer.weight, w * expected)  # no weight update


def test_per_row_counts_are_exact_and_ties_prune_the_lower_index():
    scores = {"a": torch.ones(3, 7), "b": torch.rand(5, 10)}
    masks = per_row(scores, 0.5)
    assert ((~masks["a"]).sum(1) == round(0.5 * 7)).all() and ((~masks["b"]).sum(1) == 5).all()
    assert torch.equal(masks["a"][0], torch.tensor([False] * 4 + [True] * 3))
    conv = per_row({"c": torch.rand(10, 3)}, 0.5, input_dims={"c": 0})["c"]  # Conv1D layout (in, out)
    assert ((~conv).sum(0) == 5).all()


def test_pattern_keeps_the_best_n_of_every_m_inputs_of_each_row():
    x = _outlier_inputs()
    layer = nn.Linear(16, 6, bias=False)
    w = layer.weight.detach().clone()
    data = [{"input": x[i:i + 32]} for i in range(0, 256, 32)]
    masks = prune_model(_Wrap(layer), SparsityConfig(method="wanda", pattern="2:4"), dataloader=data)
    keep = masks.masks["layer.weight"]
    assert check_nm(keep, NMPattern(2, 4)).numel() == 0 and check_nm(layer.weight != 0, NMPattern(2, 4)).numel() == 0
    score = (w.abs() * x.square().mean(0).sqrt()).view(6, 4, 4)
    expected = torch.zeros_like(score, dtype=torch.bool).scatter_(2, score.topk(2, dim=2).indices, True)
    assert torch.equal(keep, expected.view(6, 16))


def test_per_row_is_a_distribution_for_any_criterion():
    model = tiny_roberta()
    masks = prune_model(model, SparsityConfig(method="omp", sparsity=0.5, distribution="per_row"))
    for name, mask in masks.masks.items():
        assert ((~mask).sum(1) == round(0.5 * mask.shape[1])).all(), name


def test_with_outlier_columns_the_output_error_is_below_magnitude_pruning():
    x = _outlier_inputs(seed=1)
    layer = nn.Linear(16, 32, bias=False)
    w = layer.weight.detach().clone()
    _prune(layer, x)
    magnitude = w.clone()
    magnitude.scatter_(1, w.abs().argsort(1)[:, :8], 0.0)  # the same per-row count, by |w|
    err = lambda v: float(torch.linalg.norm(x @ (w - v).T))  # noqa: E731
    assert err(layer.weight.detach()) < 0.5 * err(magnitude)


def test_conv1d_rows_are_output_units():
    torch.manual_seed(0)
    conv = GPT2Model(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)).h[0].mlp.c_fc
    x = _outlier_inputs(n=64)
    masks = _prune(conv, x)
    mask = masks.masks["layer.weight"]  # (in 16, out 64)
    assert ((~mask).sum(0) == 8).all()
    linear = nn.Linear(16, 64)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
    assert torch.equal(_prune(linear, x).masks["layer.weight"], mask.T)


def test_global_distribution_calibrates_in_one_pass_and_prunes_the_total():
    model = tiny_roberta()
    data = [{"input_ids": torch.randint(2, 64, (4, 10))} for _ in range(2)]
    masks = prune_model(model, SparsityConfig(method="wanda", sparsity=0.5, distribution="global"), dataloader=data)
    assert masks.pruned() == round(0.5 * masks.numel())
    assert len({round(float((~m).float().mean()), 3) for m in masks.masks.values()}) > 1


def test_calibration_batches_need_no_labels_and_no_data_is_a_clear_error():
    model = tiny_roberta()
    data = [{"input_ids": torch.randint(2, 64, (4, 10)), "attention_mask": torch.ones(4, 10, dtype=torch.long)}]
    masks = prune_model(model, SparsityConfig(method="wanda", sparsity=0.5), dataloader=data)
    assert all(((~m).sum(1) == m.shape[1] // 2).all() for m in masks.masks.values())
    with pytest.raises(ValueError, match="activation_samples"):
        prune_model(tiny_roberta(), SparsityConfig(method="wanda", sparsity=0.5))


def test_activation_samples_limits_the_batches_read():
    seen = []

    class Counting(list):
        def __iter__(self):
            for batch in super().__iter__():
                seen.append(batch)
                yield batch

    data = Counting({"input_ids": torch.randint(2, 64, (4, 10))} for _ in range(5))
    prune_model(tiny_roberta(), SparsityConfig(method="wanda", sparsity=0.5, activation_samples=8), dataloader=data)
    assert len(seen) == 2


def test_sparse_trainer_prunes_after_dense_finetuning(tmp_path):
    model = tiny_roberta()
    cfg = SparsityConfig(method="wanda", sparsity=0.5, activation_samples=8)
    trainer = SparseTrainer(model=model, args=training_args(tmp_path, max_steps=4), sparsity_config=cfg,
                            train_dataset=ToyClassification())
    trainer.train()
    trainer.save_model()
    report = trainer.sparsity_report()
    assert report.achieved == pytest.approx(0.5)
    masks = read_masks(os.path.join(tmp_path, MASKS_FILE))
    assert all(((~m).sum(1) == m.shape[1] // 2).all() for m in masks.values())
    assert os.path.isdir(tmp_path / "round-0")


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_smc_prune_calibrates_on_a_local_file_without_labels(tmp_path, method):
    source = tiny_esm_dir(str(tmp_path / "esm"))
    calib = write_jsonl(str(tmp_path / "calib.jsonl"), [{"text": "MKTAYIAKQR" * (1 + i % 3)} for i in range(8)])
    out = str(tmp_path / "out")
    assert main([source, "--method", method, "--sparsity", "0.5", "--calibration-file", calib,
                 "--calibration-samples", "8", "--calibration-batch-size", "4", "--output", out]) == 0
    with open(os.path.join(out, "config.json")) as f:
        block = json.load(f)["sparsity"]
    assert block["method"] == method
    masks = read_masks(os.path.join(out, MASKS_FILE))
    assert sum(int((~m).sum()) for m in masks.values()) == sum(round(0.5 * m.numel()) for m in masks.values())
    assert main([source, "--method", method, "--sparsity", "0.5", "--output", str(tmp_path / "x")]) == 1
