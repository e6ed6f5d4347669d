"""ESM with the HotProtein release's classification head: the mean over residues of the last layer, then
Linear(hidden, 512) - LayerNorm - ReLU - Linear(512, classes).

transformers' `EsmForSequenceClassification` classifies from the `<cls>` token through dense + tanh; the
release's `finetune_sup*.py` mean-pools residue tokens (special tokens and padding excluded) into this MLP.
The backbone is `EsmModel`, under `esm` as in transformers, so ESM checkpoints load into it unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers import EsmModel, EsmPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

#: Hidden width of the release's head (Linear(1280, 512) on ESM-1b).
HEAD_HIDDEN = 512
#: ESM's special tokens: <cls>, <pad>, <eos>, <unk>, <mask> (used when the config names none).
ESM_SPECIAL_IDS = (0, 1, 2, 3, 32)


class MeanPoolHead(nn.Module):
    """Linear - LayerNorm - ReLU - Linear on a pooled representation."""

    def __init__(self, hidden_size: int, num_labels: int, head_hidden: int = HEAD_HIDDEN):
        super().__init__()
        self.dense = nn.Linear(hidden_size, head_hidden)
        self.norm = nn.LayerNorm(head_hidden)
        self.out_proj = nn.Linear(head_hidden, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.relu(self.norm(self.dense(pooled))))


def residue_mean(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                 special_ids: list[int]) -> torch.Tensor:
    """Mean of `hidden` over positions holding residues: attended and not a special token (<cls>, <eos>, ...)."""
    keep = ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    if attention_mask is not None:
        keep &= attention_mask.bool()
    weights = keep.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class EsmMeanPoolForSequenceClassification(EsmPreTrainedModel):
    """`config.residue_excluded_ids`: token ids left out of the mean (the tokenizer's special tokens)."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.esm = EsmModel(config, add_pooling_layer=False)
        self.classifier = MeanPoolHead(config.hidden_size, config.num_labels,
                                       getattr(config, "classifier_hidden_size", HEAD_HIDDEN))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None, **kwargs):
        if input_ids is None:
            raise ValueError("EsmMeanPoolForSequenceClassification needs input_ids to tell residues from special tokens")
        hidden = self.esm(input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        special = list(getattr(self.config, "residue_excluded_ids", None) or ESM_SPECIAL_IDS)
        logits = self.classifier(residue_mean(hidden, input_ids, attention_mask, special))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1).to(logits.device))
        return SequenceClassifierOutput(loss=loss, logits=logits)
