import pytest
import torch
from torch import nn
from transformers import RobertaConfig, RobertaForMaskedLM

from smc_hf import MaskSet
from smc_hf.core.selection import select_parameters
from tests.helpers import tiny_bert, tiny_roberta


def test_default_selection_is_the_backbone_linear_weights():
    names = list(select_parameters(tiny_roberta()))
    assert len(names) == 12  # 2 layers x (q, k, v, attn out, intermediate, output)
    assert all(n.startswith("roberta.encoder.layer.") and n.endswith(".weight") for n in names)
    bert = list(select_parameters(tiny_bert()))
    assert len(bert) == 12 and not any("pooler" in n or "classifier" in n or "embeddings" in n for n in bert)


def test_targets_and_ignore_override_the_default():
    model = tiny_roberta()
    sel = select_parameters(model, targets=[r"embeddings\.word", r"classifier\.dense"], ignore=[r"out_proj"])
    assert list(sel) == ["roberta.embeddings.word_embeddings.weight", "classifier.dense.weight"]
    sel = select_parameters(model, ignore=[r"layer\.0\."])
    assert len(sel) == 6 and all("layer.1." in n for n in sel)


def test_a_selection_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match="no prunable weights selected"):
        select_parameters(tiny_roberta(), targets=["does_not_exist"])
    with pytest.raises(ValueError, match="no prunable weights selected"):
        select_parameters(nn.Sequential(nn.LayerNorm(4)))


def test_tied_weights_are_selected_once():
    torch.manual_seed(0)
    model = RobertaForMaskedLM(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32))
    assert model.lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight
    sel = select_parameters(model, targets=[r"lm_head\.decoder", r"word_embeddings"])
    assert list(sel) == ["roberta.embeddings.word_embeddings.weight"]
    sel = select_parameters(model, targets=[r"lm_head\.decoder"])
    assert list(sel) == ["roberta.embeddings.word_embeddings.weight"]


def _masked_linear():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    masks = MaskSet({"weight": layer.weight})
    keep = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    masks.set("weight", keep)
    return layer, masks, keep


def test_mask_application_zeroes_weights_grads_and_optimizer_state():
    layer, masks, keep = _masked_linear()
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1)
    layer(torch.randn(2, 4)).sum().backward()
    opt.step()
    layer(torch.randn(2, 4)).sum().backward()
    masks.apply_to_grads()
    assert bool((layer.weight.grad[~keep] == 0).all()) and bool((layer.weight.grad[keep] != 0).all())
    masks.apply(opt)
    state = opt.state[layer.weight]
    for tensor in (layer.weight.data, state["exp_avg"], state["exp_avg_sq"]):
        assert bool((tensor[~keep] == 0).all())
        assert bool((tensor[keep] != 0).all())


class _ByVersion:
    """A stand-in placement that masks whole tensors with the masks of the current version, as the sharded
    placements do with the local masks they cut per version."""

    def apply_to_weights(self, masks):
        with torch.no_grad():
            for _, param, mask in masks.masked():
                param.mul_(mask)

    def apply_to_optimizer(self, masks, optimizer):
        for _, param, mask in masks.masked():
            for value in optimizer.state[param].values():
                if torch.is_tensor(value) and value.shape == mask.shape:
                    value.mul_(mask)


@pytest.mark.parametrize("placed", [False, True])
def test_restarted_positions_are_kept_but_zeroed_once_with_their_optimizer_state(placed):
    model = nn.Linear(4, 3, bias=False)
    masks = MaskSet({"weight": model.weight})
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    masks.placement = _ByVersion() if placed else None
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[0, 0] = False
    grown = torch.zeros(3, 4, dtype=torch.bool)
    grown[1, 1] = True
    masks.set("weight", keep, restart=grown)
    masks.apply(opt)
    assert torch.equal(masks.mask("weight"), keep)  # the restarted position stays kept
    zero = ~keep | grown
    assert bool((model.weight[zero] == 0).all()) and bool((model.weight[~zero] != 0).all())
    buffer = opt.state[model.weight]["momentum_buffer"]
    assert bool((buffer[zero] == 0).all()) and bool((buffer[~zero] != 0).all())
    with torch.no_grad():
        model.weight.fill_(1.0)
    masks.apply(opt)  # once: a later application zeroes only what the mask prunes
    assert int((model.weight == 0).sum()) == 1


def test_masks_round_trip_through_safetensors(tmp_path):
    layer, masks, keep = _masked_linear()
    masks.save(str(tmp_path / "m.safetensors"))
    other = MaskSet({"weight": layer.weight})
    other.load(str(tmp_path / "m.safetensors"))
    assert torch.equal(other.masks["weight"], keep) and other.masks["weight"].dtype == torch.bool
    assert other.digest() == masks.digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary file left behind


def test_bad_masks_are_rejected(tmp_path):
    layer, masks, _ = _masked_linear()
    with pytest.raises(ValueError, match=r"mask for weight has shape \(2, 2\), weight has \(3, 4\)"):
        masks.set("weight", torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="not selected"):
        masks.load_state_dict({"bias": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(FileNotFoundError, match="no sparsity masks"):
        masks.load(str(tmp_path / "missing.safetensors"))
    from safetensors.torch import save_file

    save_file({"weight": torch.ones(3, 4)}, str(tmp_path / "float.safetensors"))
    with pytest.raises(ValueError, match="must be bool"):
        masks.load(str(tmp_path / "float.safetensors"))


def test_mask_memory_is_one_byte_per_selected_weight():
    _, masks, keep = _masked_linear()
    assert masks.masks["weight"].element_size() == 1


def test_default_selection_on_esm_and_mbart():
    from transformers import EsmConfig, EsmForSequenceClassification, MBartConfig, MBartForConditionalGeneration

    torch.manual_seed(0)
    esm = EsmForSequenceClassification(EsmConfig(
        vocab_size=33, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, pad_token_id=1, mask_token_id=32, num_labels=2))
    names = list(select_parameters(esm))
    assert len(names) == 12 and all(n.startswith("esm.encoder.layer.") for n in names)
    mbart = MBartForConditionalGeneration(MBartConfig(
        vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32))
    names = list(select_parameters(mbart))
    assert len(names) == 6 + 10  # encoder: q k v out fc1 fc2; decoder adds cross-attention q k v out
    assert not any("lm_head" in n or "embed" in n for n in names)


def _tiny_solver():
    from transformers import RobertaConfig as _RC

    from tasks.arithmetic_model import ArithmeticSolver, ArithmeticSolverConfig

    torch.manual_seed(0)
    encoder = _RC(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=40)
    return ArithmeticSolver(ArithmeticSolverConfig(encoder_config=encoder.to_dict(), max_num_slots=4,
                                                   decoder_hidden=16, decoder_layers=2, max_output_length=7))


def test_packed_attention_projections_are_selected_with_their_out_proj():
    """nn.MultiheadAttention keeps q/k/v in one `in_proj_weight` Parameter (no nn.Linear): it is selected beside
    its out_proj, so the arithmetic solver's decoder attention is pruned whole (issue 11, bug 1)."""
    model = _tiny_solver()
    names = list(select_parameters(model))
    attn = [f"decoder.layers.{i}.{a}" for i in range(2) for a in ("self_attn", "multihead_attn")]
    for prefix in attn:
        assert f"{prefix}.in_proj_weight" in names and f"{prefix}.out_proj.weight" in names
        assert names.index(f"{prefix}.in_proj_weight") + 1 == names.index(f"{prefix}.out_proj.weight")
    # encoder: 6 Linear (q, k, v, attn out, intermediate, output); enc_proj; per decoder layer two attentions
    # (in_proj 48x16 + out_proj 16x16) and linear1/linear2 (64x16, 16x64); fixed_out (4x16), number_out (16x16)
    expected = 4 * 32 * 32 + 2 * 64 * 32 + 32 * 16 + 2 * (2 * (48 * 16 + 16 * 16) + 2 * 64 * 16) + 4 * 16 + 16 * 16
    assert sum(p.numel() for p in select_parameters(model).values()) == expected
    masks = MaskSet.for_model(model)
    assert masks.numel() == expected


def test_unpacked_multihead_attention_selects_its_three_projections():
    torch.manual_seed(0)
    model = nn.Sequential(nn.MultiheadAttention(8, 2, kdim=4, vdim=6))
    names = list(select_parameters(model))
    assert names == ["0.q_proj_weight", "0.k_proj_weight", "0.v_proj_weight", "0.out_proj.weight"]


def test_gpt2_packed_c_attn_is_a_conv1d_and_selected():
    from transformers import GPT2Config, GPT2Model

    model = GPT2Model(GPT2Config(vocab_size=40, n_positions=16, n_embd=8, n_layer=1, n_head=2))
    assert list(select_parameters(model)) == ["h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight",
                                              "h.0.mlp.c_fc.weight", "h.0.mlp.c_proj.weight"]


def test_release_embeddings_heads_selection_is_the_release_readme_set():
    """The release's default (flag --no-pruning-emb-heads off): word and position embeddings, every attention and
    feed-forward matrix, and the classification head (fairseq dense + out_proj = HF pooler.dense + classifier)."""
    from transformers import RobertaForMultipleChoice

    torch.manual_seed(0)
    model = RobertaForMultipleChoice(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=32))
    names = list(select_parameters(model, selection="release-embeddings-heads"))
    layers = [f"roberta.encoder.layer.{i}.{m}.weight" for i in range(2) for m in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense")]
    assert names == (["roberta.embeddings.word_embeddings.weight", "roberta.embeddings.position_embeddings.weight"]
                     + layers + ["roberta.pooler.dense.weight", "classifier.weight"])
    assert list(select_parameters(model)) == layers
    with pytest.raises(ValueError, match="unknown selection 'all'; choose one of default, release-embeddings-heads"):
        select_parameters(model, selection="all")
