"""Block-by-block calibration: the block stack is found generically, blocks run one at a time in order (the
capture stops at the first block), each block is calibrated on the outputs of the pruned earlier ones, so the
result equals pruning one block at a time with whole-model passes; padding tokens are left out of statistics."""

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from smc_hf import SparsityConfig, prune_model
from smc_hf.core.activations import ActivationRecorder
from smc_hf.core.sequential import find_blocks, prune_layerwise
from tests.helpers import tiny_bert


def _llama(layers=3):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg)


def _gpt2(layers=3):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=layers, n_head=2, n_positions=32))


def _batches(n=3, batch=4, length=12, padded=False):
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        mask = torch.ones(batch, length, dtype=torch.long)
        if padded:
            mask[:, length // 2:] = 0
        out.append({"input_ids": torch.randint(0, 64, (batch, length), generator=gen), "attention_mask": mask})
    return out


def test_the_block_stack_is_found_in_decoders_and_encoders():
    llama, bert = _llama(), tiny_bert()
    assert find_blocks(llama, ["model.layers.1.mlp.up_proj"])[0] == "model.layers"
    assert find_blocks(bert, ["bert.encoder.layer.0.attention.self.query"])[0] == "bert.encoder.layer"
    assert find_blocks(_gpt2(), ["transformer.h.2.mlp.c_fc"])[0] == "transformer.h"
    assert find_blocks(llama, ["model.layers.1.mlp.up_proj", "lm_head"]) is None


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
@pytest.mark.parametrize("build", [_llama, _gpt2])
def test_sequential_equals_pruning_one_block_at_a_time_with_whole_model_passes(method, build):
    sequential = build()
    masks = prune_model(sequential, SparsityConfig(method=method, sparsity=0.5), dataloader=_batches())
    blockwise = build()
    path = find_blocks(blockwise, masks.names)[0]
    for i in range(3):  # whole-model passes, one block's layers selected at a time: block i sees pruned blocks < i
        cfg = SparsityConfig(method=method, sparsity=0.5, targets=[rf"^{path}\.{i}\..*weight$"],
                             ignore=["wte", "wpe", "embed", "norm", "ln_"], sequential_calibration=False)
        prune_model(blockwise, cfg, dataloader=_batches())
    for (name, a), (_, b) in zip(sequential.named_parameters(), blockwise.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_only_the_first_block_selected_equals_the_one_pass_result():
    one, seq = _llama(), _llama()
    cfg = dict(method="sparsegpt", sparsity=0.5, targets=[r"^model\.layers\.0\..*proj\.weight$"])
    prune_model(one, SparsityConfig(**cfg, sequential_calibration=False), dataloader=_batches())
    prune_model(seq, SparsityConfig(**cfg), dataloader=_batches())
    for (name, a), (_, b) in zip(one.named_parameters(), seq.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_blocks_run_one_at_a_time_and_the_capture_stops_at_the_first():
    model = _llama(layers=4)
    calls = []
    for i, block in enumerate(model.model.layers):
        block.register_forward_pre_hook(lambda module, args, i=i: calls.append(i))
    batches = _batches(n=3)
    # layers of blocks 0 and 2 selected: block 1 only propagates, block 3 is never run
    cfg = SparsityConfig(method="sparsegpt", sparsity=0.5, targets=[r"^model\.layers\.[02]\..*proj\.weight$"])
    prune_model(model, cfg, dataloader=batches)
    # block 0: the capture (stopped there), statistics, the pruned block's outputs; block 1: outputs; block 2: statistics
    assert calls == [0] * 3 * 3 + [1] * 3 + [2] * 3


def test_a_model_without_a_block_stack_is_calibrated_in_one_pass():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, input):
            return self.body(input)

    data = [{"input": torch.randn(16, 8)}]
    masks = prune_model(Wrap(), SparsityConfig(method="sparsegpt", sparsity=0.5, sparsegpt_blocksize=4),
                        dataloader=data)
    assert masks.pruned() == 32 + 16  # half of 8x8 and of 4x8


def test_padding_tokens_are_left_out_of_the_statistics():
    layer = nn.Linear(4, 2)
    x = torch.randn(2, 6, 4)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3]).bool()
    recorder = ActivationRecorder({"layer.weight": layer}, "gram")
    with recorder:
        recorder.token_mask = mask
        layer(x)
    real = x[mask]
    torch.testing.assert_close(recorder.stats["layer.weight"].value(), 2 / 9 * real.T @ real)


def test_padded_batches_give_the_statistics_of_their_real_tokens():
    """Right-padded calibration batches prune like the same batches cut to their real tokens (causal model)."""
    padded, cut = _llama(), _llama()
    batches = _batches(padded=True)
    prune_model(padded, SparsityConfig(method="wanda", sparsity=0.5), dataloader=batches)
    short = [{"input_ids": b["input_ids"][:, :6]} for b in batches]
    prune_model(cut, SparsityConfig(method="wanda", sparsity=0.5), dataloader=short)
    for (name, a), (_, b) in zip(padded.named_parameters(), cut.named_parameters()):
        assert torch.equal(a == 0, b == 0), name


def test_the_path_taken_is_reported():
    model = _llama()
    modules = {n: model.get_submodule(n.rsplit(".", 1)[0]) for n in ["model.layers.0.mlp.up_proj.weight"]}
    seen = []
    assert prune_layerwise(model, modules, _batches(), "norms", seen.append) == "sequential"
    assert prune_layerwise(model, modules, _batches(), "norms", seen.append, sequential=False) == "one pass"
    torch.testing.assert_close(seen[0]["model.layers.0.mlp.up_proj.weight"],
                               seen[1]["model.layers.0.mlp.up_proj.weight"])
