"""GTS, the goal-driven tree-structured solver (Xie & Sun 2019) the paper trains on top of RoBERTa (SVAMP code).

A pre-trained encoder reads the problem; the SVAMP code adds a 2-layer bidirectional LSTM (directions summed)
on top, here `rnn_layers` (default 0: a Linear projection instead; `--rnn_layers 2` restores it). Measured on MAWPS fold 0 with MiniLM, batch 8,
one epoch: no LSTM 37.2% answer accuracy in 203 s, 2 layers 31.3% in 343 s; the LSTM also is no Linear layer, so
the default pruning selection would leave it dense. The decoder grows the prefix equation as a tree: each node has a goal vector; *Prediction* turns the
goal (and, for a right child, the finished left sibling subtree) into a node state, attends over the encoder
states and scores the operators and the operands (learned constant embeddings and the encoder states at the
problem's numbers); an operator's node is split by *GenerateNode* into left and right child goals; a finished
operand closes subtrees bottom-up through *Merge*, whose output is the left sibling the next right child sees.

Training is teacher forcing over the prefix target, sequential over target positions and batched over the
examples still open at each position (Python stacks of goal vectors per example, as the original code, with
the merges of one position batched into rounds). Evaluation is beam search (beam 5, as the paper) per example,
the beams batched; beam 1 takes the batched greedy path. Unlike the original, decoding only opens an operator
while the expression can still close within `max_output_length`, so every prediction is a complete expression.
Every weight matrix is an `nn.Linear` (the additive attention's is split into its goal and encoder halves
only at call time), so the library's default selection prunes the decoder as the paper did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoConfig, AutoModel
from transformers.utils import ModelOutput

from .arithmetic_model import ArithmeticSolverConfig, EncoderSolver
from .prefix_expr import OPERATORS

_MASKED = -1e12  # the original code's fill value for masked scores


class GTSConfig(ArithmeticSolverConfig):
    """Output vocabulary as the sequence solver's (operators, constants, `numberK`), plus the tree decoder's sizes.

    `fixed_tokens` must list the operators first: GTS scores operators with one head and operands with another.
    """

    model_type = "gts_solver"

    def __init__(self, rnn_layers: int = 0, op_embedding_size: int = 128, beam_size: int = 5,
                 decoder_hidden: int = 512, decoder_dropout: float = 0.5, **kwargs):
        self.rnn_layers = rnn_layers
        self.op_embedding_size = op_embedding_size
        self.beam_size = beam_size
        super().__init__(decoder_hidden=decoder_hidden, decoder_dropout=decoder_dropout, **kwargs)
        ops = self.num_operators
        if any(t in OPERATORS for t in self.fixed_tokens[ops:]) or ops == 0:
            raise ValueError(f"GTSConfig: fixed_tokens must start with the operators and hold no operator after "
                             f"the first constant; got {self.fixed_tokens}")

    @property
    def num_operators(self) -> int:
        count = 0
        while count < len(self.fixed_tokens) and self.fixed_tokens[count] in OPERATORS:
            count += 1
        return count


@dataclass
class GTSOutput(ModelOutput):
    loss: Optional[torch.Tensor] = None
    predictions: Optional[torch.Tensor] = None


def _gated(value: nn.Linear, gate: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(value(x)) * torch.sigmoid(gate(x))


class TreeAttention(nn.Module):
    """Additive attention of a node state over the encoder states (GTS `TreeAttn`)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.attn = nn.Linear(2 * hidden, hidden)
        self.score = nn.Linear(hidden, 1)

    def encoder_part(self, encoder_outputs: torch.Tensor) -> torch.Tensor:
        """W_e e + b, once per batch: `attn(cat(q, e))` splits into a goal half and an encoder half."""
        hidden = encoder_outputs.size(-1)
        return F.linear(encoder_outputs, self.attn.weight[:, hidden:], self.attn.bias)

    def forward(self, query, encoder_outputs, encoder_part, seq_mask):
        hidden = query.size(-1)
        energy = encoder_part + F.linear(query, self.attn.weight[:, :hidden]).unsqueeze(1)
        scores = self.score(torch.tanh(energy)).squeeze(-1).masked_fill(~seq_mask, _MASKED)
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights.unsqueeze(1), encoder_outputs).squeeze(1)


class OperandScore(nn.Module):
    """Score of each operand embedding (constants, then numbers) against the leaf input (GTS `Score`)."""

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.attn = nn.Linear(input_size + hidden, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, leaf, operands, operand_mask):
        expanded = leaf.unsqueeze(1).expand(-1, operands.size(1), -1)
        scores = self.score(torch.tanh(self.attn(torch.cat([expanded, operands], dim=-1)))).squeeze(-1)
        return scores.masked_fill(~operand_mask, _MASKED)


class Prediction(nn.Module):
    """Node state from goal (+ left sibling), context by attention, operator and operand logits."""

    def __init__(self, hidden: int, n_ops: int, n_constants: int, dropout: float):
        super().__init__()
        self.constants = nn.Parameter(torch.randn(n_constants, hidden))
        self.dropout = nn.Dropout(dropout)
        self.concat_l = nn.Linear(hidden, hidden)
        self.concat_lg = nn.Linear(hidden, hidden)
        self.concat_r = nn.Linear(2 * hidden, hidden)
        self.concat_rg = nn.Linear(2 * hidden, hidden)
        self.ops = nn.Linear(2 * hidden, n_ops)
        self.attn = TreeAttention(hidden)
        self.score = OperandScore(2 * hidden, hidden)

    def forward(self, goal, left, has_left, encoder_outputs, encoder_part, seq_mask, numbers, number_mask):
        goal_d = self.dropout(goal)
        node = torch.where(
            has_left.unsqueeze(-1),
            _gated(self.concat_r, self.concat_rg, torch.cat([self.dropout(left), goal_d], dim=-1)),
            _gated(self.concat_l, self.concat_lg, goal_d),
        )
        context = self.attn(self.dropout(node), encoder_outputs, encoder_part, seq_mask)
        operands = torch.cat([self.constants.unsqueeze(0).expand(goal.size(0), -1, -1), numbers], dim=1)
        operand_mask = torch.cat([number_mask.new_ones(goal.size(0), self.constants.size(0)), number_mask], dim=1)
        leaf = self.dropout(torch.cat([node, context], dim=-1))
        logits = torch.cat([self.ops(leaf), self.score(leaf, self.dropout(operands), operand_mask)], dim=-1)
        return logits, node, context, operands


class GenerateNode(nn.Module):
    """Left and right child goals of an operator node (GTS `GenerateNode`)."""

    def __init__(self, hidden: int, n_ops: int, embedding_size: int, dropout: float):
        super().__init__()
        self.embeddings = nn.Embedding(n_ops, embedding_size)
        self.dropout = nn.Dropout(dropout)
        width = 2 * hidden + embedding_size
        self.generate_l = nn.Linear(width, hidden)
        self.generate_lg = nn.Linear(width, hidden)
        self.generate_r = nn.Linear(width, hidden)
        self.generate_rg = nn.Linear(width, hidden)

    def forward(self, node, context, op_ids):
        label = self.embeddings(op_ids)
        x = torch.cat([self.dropout(node), self.dropout(context), self.dropout(label)], dim=-1)
        return _gated(self.generate_l, self.generate_lg, x), _gated(self.generate_r, self.generate_rg, x), label


class Merge(nn.Module):
    """Embedding of a finished subtree from its operator and its two children (GTS `Merge`)."""

    def __init__(self, hidden: int, embedding_size: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.merge = nn.Linear(2 * hidden + embedding_size, hidden)
        self.merge_g = nn.Linear(2 * hidden + embedding_size, hidden)

    def forward(self, op, left, right):
        x = torch.cat([self.dropout(op), self.dropout(left), self.dropout(right)], dim=-1)
        return _gated(self.merge, self.merge_g, x)


@dataclass
class _Tree:
    """One partial tree: pending goals (top = next node), built items (operator embedding or finished subtree)."""

    goals: list
    built: list = field(default_factory=list)
    left: Optional[torch.Tensor] = None
    tokens: list = field(default_factory=list)
    score: float = 0.0

    def fork(self, score: float) -> "_Tree":
        return _Tree(list(self.goals), list(self.built), self.left, list(self.tokens), score)


class GTSSolver(EncoderSolver):
    config_class = GTSConfig

    def __init__(self, config: GTSConfig):
        super().__init__(config)
        width, hidden = self.encoder.config.hidden_size, config.decoder_hidden
        n_ops = config.num_operators
        self.embed_dropout = nn.Dropout(config.decoder_dropout)
        if config.rnn_layers > 0:
            self.rnn = nn.LSTM(width, hidden, config.rnn_layers, batch_first=True, bidirectional=True,
                               dropout=config.decoder_dropout if config.rnn_layers > 1 else 0.0)
        else:
            self.enc_proj = nn.Linear(width, hidden)
        self.predict = Prediction(hidden, n_ops, len(config.fixed_tokens) - n_ops, config.decoder_dropout)
        self.generate = GenerateNode(hidden, n_ops, config.op_embedding_size, config.decoder_dropout)
        self.merge = Merge(hidden, config.op_embedding_size, config.decoder_dropout)
        self.post_init()

    def _init_decoder_weights(self, module):
        if isinstance(module, Prediction):
            nn.init.normal_(module.constants)
        elif not isinstance(module, nn.LSTM):
            super()._init_decoder_weights(module)

    # --- encoding -------------------------------------------------------------------------------------------

    def _encode(self, input_ids, attention_mask, token_type_ids, number_positions):
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        states = self.embed_dropout(states)
        lengths = attention_mask.sum(1)
        if self.config.rnn_layers > 0:
            packed = pack_padded_sequence(states, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=states.size(1))
            forward, backward = out.chunk(2, dim=-1)
            outputs = forward + backward
            rows = torch.arange(out.size(0), device=out.device)
            root = forward[rows, lengths - 1] + backward[:, 0]
        else:
            outputs = self.enc_proj(states)
            root = outputs[:, 0]
        number_mask = number_positions >= 0
        index = number_positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, outputs.size(-1))
        numbers = torch.gather(outputs, 1, index) * number_mask.unsqueeze(-1)
        return {"outputs": outputs, "part": self.predict.attn.encoder_part(outputs), "mask": attention_mask.bool(),
                "numbers": numbers, "number_mask": number_mask, "root": root}

    # --- one decoding step over a list of trees -------------------------------------------------------------

    def _predict(self, trees: list[_Tree], enc: dict, rows: torch.Tensor):
        """Logits (and the node states Generate/Merge need) for the next node of each tree; `rows` picks
        each tree's example in `enc`."""
        zeros = enc["root"].new_zeros(enc["root"].size(-1))
        goal = torch.stack([t.goals[-1] for t in trees])
        left = torch.stack([t.left if t.left is not None else zeros for t in trees])
        has_left = torch.tensor([t.left is not None for t in trees], device=goal.device)
        return self.predict(goal, left, has_left, enc["outputs"][rows], enc["part"][rows], enc["mask"][rows],
                            enc["numbers"][rows], enc["number_mask"][rows])

    def _advance(self, trees: list[_Tree], tokens: list[int], node, context, operands) -> None:
        """Apply each tree's chosen token: an operator pushes its child goals, an operand closes subtrees."""
        n_ops = self.config.num_operators
        ops = [i for i, tok in enumerate(tokens) if tok < n_ops]
        for tree, tok in zip(trees, tokens):
            tree.goals.pop()
            tree.tokens.append(tok)
        if ops:
            index = torch.tensor(ops, device=node.device)
            op_ids = torch.tensor([tokens[i] for i in ops], device=node.device)
            left, right, label = self.generate(node[index], context[index], op_ids)
            for k, i in enumerate(ops):
                trees[i].goals += [right[k], left[k]]
                trees[i].built.append((label[k], False))
        pending = {i: operands[i, tok - n_ops] for i, tok in enumerate(tokens) if tok >= n_ops}
        while pending:  # one batched Merge per level of subtrees closed by this step's operands
            ready = [i for i in pending if trees[i].built and trees[i].built[-1][1]]
            for i in [i for i in pending if i not in ready]:
                trees[i].built.append((pending.pop(i), True))
            if ready:
                done = torch.stack([trees[i].built.pop()[0] for i in ready])
                ops_emb = torch.stack([trees[i].built.pop()[0] for i in ready])
                merged = self.merge(ops_emb, done, torch.stack([pending[i] for i in ready]))
                pending = {i: merged[k] for k, i in enumerate(ready)}
        for tree in trees:
            tree.left = tree.built[-1][0] if tree.built and tree.built[-1][1] else None

    def _allowed(self, trees: list[_Tree], step: int, number_mask: torch.Tensor) -> torch.Tensor:
        """Tokens that keep each tree closable within `max_output_length` (operators need room for 2 operands)."""
        n_ops, room = self.config.num_operators, self.config.max_output_length - step - 1
        may_open = torch.tensor([len(t.goals) + 1 <= room for t in trees], device=number_mask.device)
        n_const = len(self.config.fixed_tokens) - n_ops
        return torch.cat([may_open.unsqueeze(-1).expand(-1, n_ops), number_mask.new_ones(len(trees), n_const),
                          number_mask], dim=-1)

    # --- training loss --------------------------------------------------------------------------------------

    def _teacher_forced_loss(self, enc: dict, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over target tokens; an example whose target is not one complete prefix expression
        over the vocabulary is refused in training and left out of the loss in evaluation."""
        vocab = self.config.output_vocab
        n_ops, usable = self.config.num_operators, []
        for b, row in enumerate(labels.tolist()):
            tokens = [t for t in row if t != -100]
            open_slots, ok = 1, len(tokens) > 0 and row[: len(tokens)] == tokens
            for tok in tokens:
                ok = ok and open_slots > 0 and 0 <= tok < len(vocab)
                open_slots += 1 if tok < n_ops else -1
            if ok and open_slots == 0:
                usable.append(b)
            elif self.training:
                raise ValueError(f"GTS: labels of example {b} are not one complete prefix expression over the output "
                                 f"vocabulary ({row}); drop such examples before training (preprocess filters them)")
        if not usable:
            return enc["root"].new_zeros(())
        trees = {b: _Tree([enc["root"][b]]) for b in usable}
        total, count = labels.new_zeros((), dtype=enc["root"].dtype), 0
        for step in range(labels.size(1)):
            active = [b for b in usable if trees[b].goals]
            if not active:
                break
            rows = torch.tensor(active, device=labels.device)
            logits, node, context, operands = self._predict([trees[b] for b in active], enc, rows)
            target = labels[rows, step]
            total = total + F.cross_entropy(logits, target, reduction="sum")
            count += len(active)
            self._advance([trees[b] for b in active], target.tolist(), node, context, operands)
        return total / count

    # --- decoding -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _greedy(self, enc: dict) -> list[list[int]]:
        """Batched greedy decoding (what beam search with beam 1 returns)."""
        trees = [_Tree([root]) for root in enc["root"]]
        for step in range(self.config.max_output_length):
            active = [b for b, t in enumerate(trees) if t.goals]
            if not active:
                break
            rows = torch.tensor(active, device=enc["root"].device)
            logits, node, context, operands = self._predict([trees[b] for b in active], enc, rows)
            allowed = self._allowed([trees[b] for b in active], step, enc["number_mask"][rows])
            tokens = logits.log_softmax(-1).masked_fill(~allowed, float("-inf")).argmax(-1).tolist()
            self._advance([trees[b] for b in active], tokens, node, context, operands)
        return [t.tokens for t in trees]

    @torch.no_grad()
    def _beam_search(self, enc: dict, example: int, beam_size: int) -> list[int]:
        """The GTS beam search for one example: the live beams expand together in one batch per step."""
        beams = [_Tree([enc["root"][example]])]
        for step in range(self.config.max_output_length):
            live = [t for t in beams if t.goals]
            if not live:
                break
            rows = torch.full((len(live),), example, device=enc["root"].device)
            logits, node, context, operands = self._predict(live, enc, rows)
            allowed = self._allowed(live, step, enc["number_mask"][rows])
            logp = logits.log_softmax(-1).masked_fill(~allowed, float("-inf"))
            top_v, top_i = logp.topk(min(beam_size, logp.size(-1)), dim=-1)
            candidates = [(t.score, t, None, None) for t in beams if not t.goals]
            for k, tree in enumerate(live):
                for v, i in zip(top_v[k].tolist(), top_i[k].tolist()):
                    if v != float("-inf"):
                        candidates.append((tree.score + v, tree, k, i))
            candidates.sort(key=lambda c: c[0], reverse=True)
            beams, grow, picks, tokens = [], [], [], []
            for score, tree, k, tok in candidates[:beam_size]:
                if k is None:
                    beams.append(tree)
                    continue
                child = tree.fork(score)
                beams.append(child)
                grow.append(child)
                picks.append(k)
                tokens.append(tok)
            if grow:
                index = torch.tensor(picks, device=node.device)
                self._advance(grow, tokens, node[index], context[index], operands[index])
        return max(beams, key=lambda t: t.score).tokens if beams else []

    def decode(self, enc: dict, beam_size: Optional[int] = None) -> torch.Tensor:
        """Token ids (B, max_output_length), padded with -100."""
        beam_size = beam_size or self.config.beam_size
        batch = enc["root"].size(0)
        if beam_size == 1:
            sequences = self._greedy(enc)
        else:
            sequences = [self._beam_search(enc, b, beam_size) for b in range(batch)]
        out = torch.full((batch, self.config.max_output_length), -100, dtype=torch.long, device=enc["root"].device)
        for b, tokens in enumerate(sequences):
            out[b, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return out

    def forward(self, input_ids, attention_mask, number_positions, labels=None, token_type_ids=None,
                beam_size: Optional[int] = None):
        enc = self._encode(input_ids, attention_mask, token_type_ids, number_positions)
        loss = predictions = None
        if labels is not None:
            loss = self._teacher_forced_loss(enc, labels)
        if not self.training:
            predictions = self.decode(enc, beam_size)
        return GTSOutput(loss=loss, predictions=predictions)


AutoConfig.register("gts_solver", GTSConfig)
AutoModel.register(GTSConfig, GTSSolver)
