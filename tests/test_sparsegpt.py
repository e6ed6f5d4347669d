"""SparseGPT on problems with known answers: the OBS update is the least-squares optimum of the weights it may
move, counts are exact per layer, N:M groups are exact, dead inputs are handled, and on correlated inputs its
output error is below magnitude pruning's; as a method: default selection (no lm_head), dtype kept, clear errors."""

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaForCausalLM

from smc_hf import SparsityConfig, prune_model
from smc_hf.core.patterns import NMPattern, check_nm, input_dims
from smc_hf.core.sparsegpt import block_prune_counts, sparsegpt_prune


def _inputs(n=256, columns=8, seed=0, correlated=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, columns, generator=gen, dtype=torch.float64)
    if correlated:
        x = x @ (torch.eye(columns, dtype=torch.float64) + 0.8 * torch.randn(columns, columns, generator=gen,
                                                                             dtype=torch.float64))
    return x


def _hessian(x):
    return (2.0 / x.shape[0]) * x.T @ x


def _least_squares(x, w, q):
    """Row vector w' minimising ||x w' - x w|| with w'_q = 0 and w'_j = w_j for j < q (those already fixed)."""
    target = x @ w - x[:, :q] @ w[:q]
    out = w.clone()
    out[q] = 0
    out[q + 1:] = torch.linalg.lstsq(x[:, q + 1:], target.unsqueeze(1)).solution.squeeze(1)
    return out


def test_one_weight_pruned_per_row_gets_the_least_squares_optimum_of_the_rest():
    x = _inputs()
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    w[:, 0] *= 1e-3  # column 0 holds the lowest score of every row: one weight pruned per row, all in column 0
    new, keep = sparsegpt_prune(w.float(), _hessian(x).float(), 1 / 8, blocksize=8, percdamp=0.0)
    assert torch.equal(keep, torch.arange(8).expand(5, 8) != 0)
    expected = torch.stack([_least_squares(x, w[r], 0) for r in range(5)])
    torch.testing.assert_close(new.double(), expected, rtol=1e-4, atol=1e-5)


def test_the_update_right_of_a_pruned_weight_is_the_least_squares_optimum_there():
    """One weight pruned per row anywhere (7:8): columns left of it are fixed, those right of it absorb the error."""
    x = _inputs(seed=2)
    w = torch.randn(6, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w[torch.arange(6), torch.arange(6) + 1] *= 1e-4  # row r's lowest score in column r + 1
    new, keep = sparsegpt_prune(w.float(), _hessian(x).float(), 0.0, blocksize=8, percdamp=0.0, pattern=NMPattern(7, 8))
    assert (keep.sum(1) == 7).all()
    pruned = (~keep).nonzero()[:, 1]
    assert pruned.tolist() == [1, 2, 3, 4, 5, 6]
    expected = torch.stack([_least_squares(x, w[r], int(pruned[r])) for r in range(6)])
    torch.testing.assert_close(new.double(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sparsity", [0.5, 0.3, 0.77])
def test_counts_are_exact_per_layer_across_column_blocks(sparsity):
    rows, columns = 7, 300
    x = _inputs(n=512, columns=columns, correlated=False).float()
    w = torch.randn(rows, columns, generator=torch.Generator().manual_seed(4))
    new, keep = sparsegpt_prune(w, _hessian(x), sparsity, blocksize=128)
    assert int((~keep).sum()) == round(sparsity * rows * columns) == int((new == 0).sum())
    assert torch.equal(new == 0, ~keep)
    per_block = [int((~keep[:, a:a + 128]).sum()) for a in range(0, columns, 128)]
    assert per_block == block_prune_counts(rows, columns, sparsity, 128)
    shares = [sparsity * rows * (min(a + 128, columns) - a) for a in range(0, columns, 128)]
    assert all(abs(c - s) <= 1 for c, s in zip(per_block, shares))


def test_nm_groups_are_exact_and_misfit_widths_are_refused():
    x = _inputs(n=128, columns=16).float()
    w = torch.randn(4, 16, generator=torch.Generator().manual_seed(5))
    new, keep = sparsegpt_prune(w, _hessian(x), 0.0, blocksize=8, pattern=NMPattern(2, 4))
    assert (keep.view(4, 4, 4).sum(2) == 2).all() and torch.equal(new == 0, ~keep)
    with pytest.raises(ValueError, match="multiples of 4"):
        sparsegpt_prune(w, _hessian(x), 0.0, blocksize=6, pattern=NMPattern(2, 4))


def test_dead_inputs_are_pruned_first_and_nothing_is_nan():
    x = _inputs(n=128, columns=8).float()
    x[:, 3] = 0
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(6))
    new, keep = sparsegpt_prune(w, _hessian(x), 0.25, blocksize=8)
    assert torch.isfinite(new).all() and not keep[:, 3].any() and int((~keep).sum()) == 8


def test_on_correlated_inputs_the_output_error_is_below_magnitude_pruning():
    gen = torch.Generator().manual_seed(7)  # 64 inputs driven by 16 factors, plus a little noise
    x = torch.randn(512, 16, generator=gen) @ torch.randn(16, 64, generator=gen) + 0.1 * torch.randn(512, 64, generator=gen)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(8))
    new, _ = sparsegpt_prune(w, _hessian(x), 0.5, blocksize=16)
    magnitude = w.clone()  # the same per-layer count, by |w|
    threshold = w.abs().flatten().kthvalue(round(0.5 * w.numel())).values
    magnitude[w.abs() <= threshold] = 0
    err = lambda v: float(torch.linalg.norm(x @ (w - v).T))  # noqa: E731
    assert err(new) < 0.6 * err(magnitude)  # measured: 0.51


def _llama(dtype=torch.float32):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).to(dtype)


def _token_batches(n=3, vocab=64, batch=4, length=12):
    gen = torch.Generator().manual_seed(9)
    return [{"input_ids": torch.randint(0, vocab, (batch, length), generator=gen)} for _ in range(n)]


def test_prune_model_prunes_every_selected_layer_exactly_and_leaves_lm_head_and_embeddings():
    model = _llama()
    head, embed = model.lm_head.weight.clone(), model.model.embed_tokens.weight.clone()
    masks = prune_model(model, SparsityConfig(method="sparsegpt", sparsity=0.5), dataloader=_token_batches())
    assert "lm_head.weight" not in masks.params and not any("embed" in n for n in masks.params)
    assert len(masks.masks) == 2 * 7
    for name, param in masks.params.items():
        assert int((param == 0).sum()) == round(0.5 * param.numel()), name
    assert torch.equal(model.lm_head.weight, head) and torch.equal(model.model.embed_tokens.weight, embed)


def test_weights_are_written_back_in_their_dtype():
    model = _llama(torch.bfloat16)
    masks = prune_model(model, SparsityConfig(method="sparsegpt", sparsity=0.5), dataloader=_token_batches())
    for name, param in masks.params.items():
        assert param.dtype == torch.bfloat16 and int((param == 0).sum()) == round(0.5 * param.numel()), name


def test_gpt2_conv1d_prunes_like_the_transposed_linear():
    """Conv1D stores (in, out): its masks are the transposes of an nn.Linear with the same map."""
    torch.manual_seed(0)
    conv = GPT2Model(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)).h[0].mlp.c_fc
    linear = nn.Linear(16, 64)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    x = torch.randn(8, 5, 16, generator=torch.Generator().manual_seed(1))
    results = []
    for layer in (conv, linear):
        model = nn.Sequential(layer)
        data = [{"input": x[i:i + 2]} for i in range(0, 8, 2)]
        masks = prune_model(_Wrap(model), SparsityConfig(method="sparsegpt", sparsity=0.5, sparsegpt_blocksize=8),
                            dataloader=data)
        results.append(next(iter(masks.masks.values())))
    assert torch.equal(results[0].T, results[1])


class _Wrap(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, input):
        return self.body(input)


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_pattern_gives_exact_groups_in_every_layer(pattern):
    model = _llama()
    masks = prune_model(model, SparsityConfig(method="sparsegpt", pattern=pattern), dataloader=_token_batches())
    dims = input_dims(model, masks.names)
    for name, param in masks.params.items():
        assert check_nm(param != 0, NMPattern.parse(pattern), dims[name]).numel() == 0, name
        assert check_nm(masks.masks[name], NMPattern.parse(pattern), dims[name]).numel() == 0, name
    with pytest.raises(ValueError, match="multiple of 8"):
        SparsityConfig(method="sparsegpt", pattern="4:8", sparsegpt_blocksize=12)


def test_without_calibration_data_the_error_names_the_option():
    with pytest.raises(ValueError, match="dataloader=.*--calibration-task"):
        prune_model(_llama(), SparsityConfig(method="sparsegpt", sparsity=0.5))


def test_other_distributions_and_bad_options_are_refused_before_any_work():
    with pytest.raises(ValueError, match="uniform"):
        SparsityConfig(method="sparsegpt", sparsity=0.5, distribution="global")
    with pytest.raises(ValueError, match="sparsegpt_blocksize"):
        SparsityConfig(method="sparsegpt", sparsity=0.5, sparsegpt_blocksize=0)
    with pytest.raises(ValueError, match="sparsegpt_damp"):
        SparsityConfig(method="sparsegpt", sparsity=0.5, sparsegpt_damp=-1.0)
