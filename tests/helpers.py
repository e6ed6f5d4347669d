"""Tiny models and data built in-process, so tests need no download."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from transformers import (
    BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification, TrainerCallback,
)


def tiny_roberta(num_labels: int = 2, seed: int = 0, **overrides) -> RobertaForSequenceClassification:
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40, num_labels=num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **overrides,
    )
    return RobertaForSequenceClassification(config)


def tiny_bert(num_labels: int = 2, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40, num_labels=num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


class ToyClassification(Dataset):
    """Random token sequences whose label is whether token 5 appears: learnable, deterministic."""

    def __init__(self, n: int = 32, length: int = 12, vocab: int = 64, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(6, vocab, (n, length), generator=gen)
        self.labels = torch.randint(0, 2, (n,), generator=gen)
        self.ids[self.labels == 1, 3] = 5

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def training_args(output_dir, **overrides):
    from transformers import TrainingArguments

    defaults = dict(
        output_dir=str(output_dir), per_device_train_batch_size=4, learning_rate=1e-3, weight_decay=0.1,
        max_steps=10, logging_steps=5, save_strategy="no", report_to=[], seed=0, use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    defaults.update(overrides)
    return TrainingArguments(**defaults)


class RateRecorder(TrainerCallback):
    """The learning rate of the first parameter group, read just before each optimizer step."""

    def __init__(self):
        self.rates = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append(optimizer.param_groups[0]["lr"])


class ShiftingSGD(torch.optim.SGD):
    """SGD with momentum that also moves every entry a little: like any optimizer outside torch's elementwise
    ones, a zero gradient on a zero weight does not keep it zero, so masks must be re-applied after each step."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            for param in group["params"]:
                param.add_(1e-3)
        return loss
