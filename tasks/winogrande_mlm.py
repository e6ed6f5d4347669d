"""WinoGrande scored with the masked-LM head, as fairseq's `winogrande` task and criterion (the paper's recipe).

Each option is filled into the blank; its tokens are replaced by `<mask>` and the option's score is the mean
log-probability the LM head gives its own tokens there. The option with the higher score is the prediction (an
exact tie counts for the correct option, as fairseq's `query >= candidate`). Training minimises fairseq's margin
loss on the correct option's score q and the wrong one's c:

    loss = mean over the batch of  -q + alpha * max(0, c - q + beta)     (alpha 5, beta 0.4 in the recipe)

The scorer is the checkpoint's own masked-LM class (`AutoModelForMaskedLM`) with this forward mixed in, so the
saved model loads with plain `AutoModelForMaskedLM.from_pretrained`, and the library's default selection prunes
the backbone's attention and feed-forward while the LM head and the embeddings stay dense (the release's
`--no-pruning-emb-heads` runs). The LM head runs on the masked positions only: the same numbers as scoring every
position, without a vocabulary-sized output for each token.

Inputs per example and option: `<s> prefix option suffix </s>` (the tokenizer's special tokens, as RoBERTa was
pre-trained; the release's command passes no `--init-token` and starts without `<s>`), each piece tokenised on its
own so that the option's tokens are exactly the span (fairseq likewise counts the span as the tokens of
`" " + option`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch.nn import functional as F
from transformers.utils import ModelOutput

#: fairseq's `--wsc-margin-alpha 5.0 --wsc-margin-beta 0.4` (the WinoGrande recipe in examples/roberta/wsc).
MARGIN_ALPHA = 5.0
MARGIN_BETA = 0.4


@dataclass
class SpanScoreOutput(ModelOutput):
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None  # (batch, options): each option's mean masked log-probability


def margin_loss(scores: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """fairseq's WSC margin loss for two options, averaged over the batch (fairseq sums it and divides the
    gradient by the batch size)."""
    rows = torch.arange(scores.size(0), device=scores.device)
    query, candidate = scores[rows, labels], scores[rows, 1 - labels]
    return (-query + alpha * (candidate - query + beta).clamp(min=0)).mean()


class MaskedSpanScoring:
    """Forward of a span scorer, mixed in before a transformers masked-LM class (see `span_scorer_class`)."""

    def _span_head(self):
        for name in ("lm_head", "cls"):  # RoBERTa/XLM-R/ESM, BERT
            head = getattr(self, name, None)
            if head is not None:
                return head
        raise ValueError(f"{type(self).__name__}: no masked-LM head found (lm_head or cls); "
                         f"WinoGrande's mlm_margin scoring needs a masked-LM model, or pass --winogrande_scoring "
                         f"multiple_choice")

    def forward(self, input_ids, attention_mask, span_mask, labels=None, **kwargs):
        """`input_ids`, `attention_mask`, `span_mask`: (batch, options, length), the span marking the option's
        tokens; `labels`: the correct option (batch,)."""
        batch, options, length = input_ids.shape
        ids, span = input_ids.reshape(-1, length), span_mask.reshape(-1, length).bool()
        if not bool(span.any(dim=1).all()):
            raise ValueError("an option has no token in its span (an empty option); every option needs text")
        mask_id = getattr(self.config, "mask_token_id", None)
        if mask_id is None:
            raise ValueError(f"{type(self).__name__}: the config has no mask_token_id; set it to the tokenizer's "
                             f"<mask> id (the option's tokens are replaced by it)")
        masked = ids.masked_fill(span, mask_id)
        hidden = self.base_model(input_ids=masked, attention_mask=attention_mask.reshape(-1, length))[0]
        logp = F.log_softmax(self._span_head()(hidden[span]).float(), dim=-1)
        token_logp = logp.gather(1, ids[span].unsqueeze(1)).squeeze(1)
        owner = span.nonzero()[:, 0]
        totals = torch.zeros(ids.size(0), dtype=token_logp.dtype, device=ids.device).index_add(0, owner, token_logp)
        scores = (totals / span.sum(dim=1)).reshape(batch, options)
        loss = None
        if labels is not None:
            loss = margin_loss(scores, labels, self.config.margin_alpha, self.config.margin_beta)
        return SpanScoreOutput(loss=loss, logits=scores)


_CLASSES: dict[type, type] = {}


def span_scorer_class(mlm_class: type) -> type:
    """`mlm_class` (e.g. RobertaForMaskedLM) with the span-scoring forward; one class per masked-LM class."""
    if mlm_class not in _CLASSES:
        _CLASSES[mlm_class] = type(f"WinoGrande{mlm_class.__name__}", (MaskedSpanScoring, mlm_class), {})
    return _CLASSES[mlm_class]


def load_span_scorer(path: str, mask_token_id: int, cache_dir: Optional[str] = None,
                     alpha: float = MARGIN_ALPHA, beta: float = MARGIN_BETA):
    """The checkpoint's masked-LM model as a span scorer; a checkpoint without an LM head gets a new one."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING

    config = AutoConfig.from_pretrained(path, cache_dir=cache_dir)
    if type(config) not in MODEL_FOR_MASKED_LM_MAPPING:
        raise ValueError(f"{path}: a {config.model_type!r} model has no masked-LM class in transformers; "
                         f"WinoGrande's mlm_margin scoring needs one (or pass --winogrande_scoring multiple_choice)")
    config.mask_token_id, config.margin_alpha, config.margin_beta = mask_token_id, alpha, beta
    cls = span_scorer_class(MODEL_FOR_MASKED_LM_MAPPING[type(config)])
    return cls.from_pretrained(path, config=config, cache_dir=cache_dir)


def encode_options(tokenizer, sentence: str, options: list[str]) -> dict[str, list[list[int]]]:
    """Token ids, attention and span masks of each option filled into the blank `_` of `sentence`.

    As fairseq: the text before the blank loses its trailing spaces and the option gets one leading space if the
    blank had a space before it."""
    blank = sentence.index("_")
    before, after = sentence[:blank], sentence[blank + 1:]
    lead = " " if before.endswith(" ") else ""
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
    prefix, suffix = encode(before.rstrip()), encode(after)
    bos = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id]
    eos = [tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id]
    out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "span_mask": []}
    for option in options:
        span = encode(lead + option)
        ids = bos + prefix + span + suffix + eos
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["span_mask"].append([0] * (1 + len(prefix)) + [1] * len(span) + [0] * (len(suffix) + 1))
    return out


@dataclass
class SpanCollator:
    """Pads every option of the batch to one length: (batch, options, length) ids, attention and span masks."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for f in features for ids in f["input_ids"])

        def pad(key, value):
            return torch.tensor([[list(x) + [value] * (width - len(x)) for x in f[key]] for f in features])

        batch = {"input_ids": pad("input_ids", self.pad_token_id), "attention_mask": pad("attention_mask", 0),
                 "span_mask": pad("span_mask", 0)}
        if "label" in features[0]:
            batch["labels"] = torch.tensor([int(f["label"]) for f in features])
        return batch


def span_accuracy(scores, labels) -> float:
    """Percent of examples whose correct option scores at least the other's (fairseq's `query >= candidate`)."""
    import numpy as np

    scores, labels = np.asarray(scores), np.asarray(labels).astype(int)
    rows = np.arange(len(labels))
    return float(np.mean(scores[rows, labels] >= scores[rows, 1 - labels]) * 100.0)
