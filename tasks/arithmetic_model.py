"""A math-word-problem solver: a pre-trained encoder and a small Transformer decoder emitting prefix equations.

The paper's GTS solver decodes a goal-driven tree; this is the sequence-decoder variant over the same
output language (operators, frequent constants and `numberK` placeholders). Placeholders are copied from the
problem: a `numberK` token is embedded as (and scored against) the encoder state at that number's first
sub-token, so the decoder never needs a vocabulary of numbers. Decoding is greedy and constrained to
well-formed prefix expressions (an operator opens a slot, an operand fills one), so every prediction can be
evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .prefix_expr import OPERATORS


_POOLED_ENCODERS = ("bert", "roberta", "xlm-roberta")


class ArithmeticSolverConfig(PretrainedConfig):
    model_type = "arithmetic_solver"

    def __init__(
        self,
        encoder_config: Optional[dict] = None,
        fixed_tokens: Optional[list[str]] = None,
        max_num_slots: int = 16,
        decoder_hidden: int = 256,
        decoder_layers: int = 2,
        decoder_heads: int = 4,
        decoder_dropout: float = 0.5,  # GTS
        max_output_length: int = 20,
        **kwargs,
    ):
        self.encoder_config = encoder_config or {}
        self.fixed_tokens = list(fixed_tokens) if fixed_tokens is not None else list(OPERATORS[:4])
        self.max_num_slots = max_num_slots
        self.decoder_hidden = decoder_hidden
        self.decoder_layers = decoder_layers
        self.decoder_heads = decoder_heads
        self.decoder_dropout = decoder_dropout
        self.max_output_length = max_output_length
        super().__init__(**kwargs)

    @property
    def output_vocab(self) -> list[str]:
        """Decoder token ids: fixed tokens first, then `number0..numberM-1`."""
        return self.fixed_tokens + [f"number{k}" for k in range(self.max_num_slots)]


@dataclass
class SolverOutput(ModelOutput):
    loss: Optional[torch.Tensor] = None
    predictions: Optional[torch.Tensor] = None


class EncoderSolver(PreTrainedModel):
    """A pre-trained encoder under a new decoder: what the sequence and the GTS solvers share."""

    base_model_prefix = "solver"
    main_input_name = "input_ids"

    def __init__(self, config: ArithmeticSolverConfig):
        super().__init__(config)
        encoder_config = AutoConfig.for_model(**config.encoder_config)
        pooler = {"add_pooling_layer": False} if encoder_config.model_type in _POOLED_ENCODERS else {}
        self.encoder = AutoModel.from_config(encoder_config, **pooler)

    @classmethod
    def from_encoder(cls, encoder_name_or_path: str, fixed_tokens: list[str], cache_dir=None, **kwargs):
        """A solver whose encoder starts from a pre-trained checkpoint and whose decoder is new."""
        encoder = AutoModel.from_pretrained(encoder_name_or_path, cache_dir=cache_dir)
        config = cls.config_class(encoder_config=encoder.config.to_dict(), fixed_tokens=fixed_tokens, **kwargs)
        model = cls(config)
        missing, _ = model.encoder.load_state_dict(encoder.state_dict(), strict=False)
        if missing:
            raise ValueError(f"{encoder_name_or_path}: encoder weights missing for {missing}")
        return model

    def _init_weights(self, module):
        encoder = self.__dict__.get("_modules", {}).get("encoder")
        if encoder is not None and any(module is m for m in encoder.modules()):
            encoder._init_weights(module)
        else:
            self._init_decoder_weights(module)

    def _init_decoder_weights(self, module):
        super()._init_weights(module)

    def optimizer_head_prefixes(self) -> tuple[str, ...]:
        """Everything but the pre-trained encoder is new and trains at the head learning rate."""
        return tuple(name for name, _ in self.named_children() if name != "encoder")


class ArithmeticSolver(EncoderSolver):
    config_class = ArithmeticSolverConfig

    def __init__(self, config: ArithmeticSolverConfig):
        super().__init__(config)
        d = config.decoder_hidden
        n_fixed = len(config.fixed_tokens)
        self.enc_proj = nn.Linear(self.encoder.config.hidden_size, d)
        self.token_embed = nn.Embedding(n_fixed + 1, d)  # fixed tokens, then the start token
        self.pos_embed = nn.Embedding(config.max_output_length + 1, d)
        layer = nn.TransformerDecoderLayer(
            d, config.decoder_heads, 4 * d, config.decoder_dropout, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, config.decoder_layers)
        self.out_norm = nn.LayerNorm(d)
        self.fixed_out = nn.Linear(d, n_fixed)
        self.number_out = nn.Linear(d, d)
        self.post_init()

    def _encode(self, input_ids, attention_mask, token_type_ids, number_positions):
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        memory = self.enc_proj(hidden)
        index = number_positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, memory.size(-1))
        numbers = torch.gather(memory, 1, index)  # (B, M, d): encoder state at each number
        return memory, numbers, number_positions >= 0

    def _embed(self, tokens, numbers):
        n_fixed = len(self.config.fixed_tokens)
        is_number = tokens >= n_fixed
        fixed = self.token_embed(torch.where(is_number, torch.zeros_like(tokens), tokens))
        slot = (tokens - n_fixed).clamp(min=0, max=numbers.size(1) - 1)
        copied = torch.gather(numbers, 1, slot.unsqueeze(-1).expand(-1, -1, numbers.size(-1)))
        return torch.where(is_number.unsqueeze(-1), copied, fixed)

    def _decode(self, prefix_emb, memory, memory_mask, numbers, number_mask):
        steps = prefix_emb.size(1)
        positions = torch.arange(steps, device=prefix_emb.device)
        causal = nn.Transformer.generate_square_subsequent_mask(steps, device=prefix_emb.device)
        states = self.decoder(
            prefix_emb + self.pos_embed(positions), memory, tgt_mask=causal, tgt_is_causal=True,
            memory_key_padding_mask=~memory_mask.bool(),
        )
        states = self.out_norm(states)
        number_logits = torch.einsum("btd,bmd->btm", self.number_out(states), numbers)
        number_logits = number_logits.masked_fill(~number_mask.unsqueeze(1), torch.finfo(states.dtype).min)
        return torch.cat([self.fixed_out(states), number_logits], dim=-1)

    def _start(self, batch_size, device):
        start_id = torch.full((batch_size, 1), len(self.config.fixed_tokens), device=device)
        return self.token_embed(start_id)

    def forward(self, input_ids, attention_mask, number_positions, labels=None, token_type_ids=None):
        memory, numbers, number_mask = self._encode(input_ids, attention_mask, token_type_ids, number_positions)
        loss = predictions = None
        if labels is not None:
            shifted = labels[:, :-1].clamp(min=0)
            prefix = torch.cat([self._start(labels.size(0), labels.device), self._embed(shifted, numbers)], dim=1)
            logits = self._decode(prefix, memory, attention_mask, numbers, number_mask)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        if not self.training:
            predictions = self._greedy(memory, attention_mask, numbers, number_mask)
        return SolverOutput(loss=loss, predictions=predictions)

    @torch.no_grad()
    def _greedy(self, memory, memory_mask, numbers, number_mask):
        """Greedy decoding restricted to complete prefix expressions of at most `max_output_length` tokens."""
        batch, device = memory.size(0), memory.device
        n_fixed, max_len = len(self.config.fixed_tokens), self.config.max_output_length
        is_operator = torch.tensor([t in OPERATORS for t in self.config.fixed_tokens], device=device)
        open_slots = torch.ones(batch, dtype=torch.long, device=device)
        out = torch.full((batch, max_len), -100, dtype=torch.long, device=device)
        prefix = self._start(batch, device)
        for step in range(max_len):
            logits = self._decode(prefix, memory, memory_mask, numbers, number_mask)[:, -1]
            room = max_len - step - 1  # tokens left after this one
            may_open = (open_slots + 1 <= room).unsqueeze(-1)
            fixed_ok = torch.where(is_operator.unsqueeze(0), may_open, torch.ones_like(may_open))
            allowed = torch.cat([fixed_ok, number_mask], dim=-1)
            token = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min).argmax(-1)
            active = open_slots > 0
            out[:, step] = torch.where(active, token, out[:, step])
            opens = (token < n_fixed) & is_operator[token.clamp(max=n_fixed - 1)]
            open_slots = torch.where(active, open_slots + torch.where(opens, 1, -1), open_slots)
            if not bool((open_slots > 0).any()):
                break
            prefix = torch.cat([prefix, self._embed(token.unsqueeze(1), numbers)], dim=1)
        return out


AutoConfig.register("arithmetic_solver", ArithmeticSolverConfig)
AutoModel.register(ArithmeticSolverConfig, ArithmeticSolver)
