"""When masks change, in optimizer steps (gradient accumulation counted, skipped fp16 steps not)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


def resolve_step(value: Optional[float], max_steps: int, default: float, name: str) -> int:
    """An absolute step from a config value: below 1 it is a fraction of `max_steps`, else a step count."""
    value = default if value is None else value
    step = int(round(value * max_steps)) if value < 1 else int(value)
    if step > max_steps:
        raise ValueError(f"{name} = {value} is step {step}, past the end of training ({max_steps} optimizer steps)")
    return step


def cubic_sparsity(step: int, begin: int, end: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3, clamped to [t0, t1]."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    progress = (step - begin) / (end - begin)
    return final + (initial - final) * (1.0 - progress) ** 3


@dataclass
class GradualSchedule:
    """Mask updates every `every` steps from `begin` to `end`, with a last update exactly at `end`."""

    begin: int
    end: int
    every: int

    @classmethod
    def from_config(cls, config, max_steps: int, begin: float, end: float, events: int = 10) -> "GradualSchedule":
        b = resolve_step(config.begin_step, max_steps, begin, "begin_step")
        e = resolve_step(config.end_step, max_steps, end, "end_step")
        if e <= b:
            raise ValueError(
                f"the schedule needs begin_step < end_step, got steps {b} and {e} of {max_steps}; "
                "train longer or move the schedule"
            )
        every = config.update_every or max(1, math.ceil((e - b) / events))
        return cls(b, e, every)

    def is_update(self, step: int) -> bool:
        return self.begin <= step <= self.end and ((step - self.begin) % self.every == 0 or step == self.end)
