"""Release schedules stepped once per epoch, the rate constant within an epoch, set over a constant HF schedule.

Protein: `OneCycleLR(steps_per_epoch=1, epochs=E)` stepped at each epoch's end. The release builds torch's one-cycle schedule with one step per epoch and steps it at each epoch's end, so the
rate is constant within an epoch: over 4 epochs the epochs train at 0.04, 0.81, 0.28 and 4e-6 of the peak rate
(torch's defaults: 30% warm-up, cosine annealing, peak / 25 at the start, peak / 2.5e5 at the end).
Arithmetic (GTS): `StepLR(step_size=20, gamma=0.5)` stepped per epoch: epoch e trains at 0.5 ** (e // 20).
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback


def one_cycle_epoch_factors(epochs: int) -> list[float]:
    """The rate of each epoch as a fraction of the peak, read from torch's own OneCycleLR."""
    if epochs < 1:
        raise ValueError(f"the per-epoch one-cycle schedule needs at least one epoch, got {epochs}")
    if epochs == 1:
        return [1.0]  # torch's OneCycleLR needs two steps; one epoch trains at the peak
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, steps_per_epoch=1, epochs=epochs)
    factors = []
    for epoch in range(epochs):
        factors.append(optimizer.param_groups[0]["lr"])
        if epoch < epochs - 1:
            optimizer.step()
            schedule.step()
    return factors


def step_epoch_factors(epochs: int, step_size: int, gamma: float) -> list[float]:
    """torch's `StepLR` stepped once per epoch: epoch e (from 0) trains at gamma ** (e // step_size)."""
    if step_size < 1:
        raise ValueError(f"the per-epoch step schedule needs step_size >= 1 epoch, got {step_size}")
    return [gamma ** (epoch // step_size) for epoch in range(max(epochs, 1))]


class EpochFactors(TrainerCallback):
    """Sets every parameter group's rate to its base rate (`initial_lr`, kept by the constant schedule under it)
    times the epoch's factor before each optimizer step; each training round restarts at epoch 0."""

    def __init__(self, factors: list[float]):
        self.factors = list(factors)

    def factor(self, epoch: int) -> float:
        return self.factors[min(epoch, len(self.factors) - 1)]

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        factor = self.factor(int(state.epoch or 0))
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor


class EpochOneCycle(EpochFactors):
    """The protein release's one-cycle rate per epoch."""

    def __init__(self, num_train_epochs: float):
        super().__init__(one_cycle_epoch_factors(math.ceil(num_train_epochs)))


class EpochStepDecay(EpochFactors):
    """GTS's `StepLR`: the rates multiplied by `gamma` every `step_size` epochs, however long the run
    (`--max_steps` included)."""

    def __init__(self, num_train_epochs: float, step_size: int, gamma: float):
        super().__init__(step_epoch_factors(math.ceil(num_train_epochs), step_size, gamma))
        self.step_size, self.gamma = step_size, gamma

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.step_size)
