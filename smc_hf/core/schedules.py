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


#: Default mask-update interval: a sixth of training, the release's 500 of 3000 steps on CSQA (GMP and RigL).
DEFAULT_UPDATES_PER_RUN = 6


def default_interval(max_steps: int) -> int:
    return max(1, round(max_steps / DEFAULT_UPDATES_PER_RUN))


@dataclass
class GradualSchedule:
    """Mask updates at the multiples of `every` in [begin, end), as the release's GMP (`steps % update_frequency
    == 0` between 10% and 80% of training); with `exact_end`, one more update exactly at `end`, where the cubic
    curve reaches the target (the release's last event, strictly before `end`, stops at ~99% of it)."""

    begin: int
    end: int
    every: int
    exact_end: bool = True

    @classmethod
    def from_config(cls, config, max_steps: int, begin: float, end: float) -> "GradualSchedule":
        b = resolve_step(config.begin_step, max_steps, begin, "begin_step")
        e = resolve_step(config.end_step, max_steps, end, "end_step")
        if e <= b:
            raise ValueError(
                f"the schedule needs begin_step < end_step, got steps {b} and {e} of {max_steps}; "
                "train longer or move the schedule"
            )
        every = config.update_every or default_interval(max_steps)
        schedule = cls(b, e, every, bool(getattr(config, "exact_end", True)))
        if not schedule.events() or every > e:
            raise ValueError(
                f"the schedule never prunes: no multiple of update_every = {every} lies in [{b}, {e}) of a "
                f"{max_steps}-step run (exact_end alone would prune once, at step {e}: one-shot, not gradual); "
                "lower update_every (the tasks set the release's interval for their full-length runs: a shorter "
                "run passes --sparsity_update_every)"
            )
        return schedule

    def is_update(self, step: int) -> bool:
        if self.exact_end and step == self.end:
            return True
        return self.begin <= step < self.end and step % self.every == 0

    def events(self) -> list[int]:
        """Every update step, in order."""
        first = max(self.every, math.ceil(self.begin / self.every) * self.every)
        steps = list(range(first, self.end, self.every))
        return steps + [self.end] if self.exact_end else steps


@dataclass
class PeriodicSchedule:
    """Mask updates at every multiple of `every` up to and including `end` (RigL's: SMC-Bench's release updates
    from the first interval on, through the last step by default)."""

    end: int
    every: int

    @classmethod
    def from_config(cls, config, max_steps: int, name: str) -> "PeriodicSchedule":
        end = max_steps if config.end_step is None else resolve_step(config.end_step, max_steps, 1.0, "end_step")
        every = config.update_every or default_interval(max_steps)
        if every > end:
            raise ValueError(
                f"{name} would never update the mask: update_every = {every} steps is past end_step "
                f"(step {end} of {max_steps}); lower update_every or move end_step later (the tasks set "
                "the release's interval for their full-length runs: a shorter run passes --sparsity_update_every)"
            )
        return cls(end, every)

    def is_update(self, step: int) -> bool:
        return 0 < step <= self.end and step % self.every == 0

    def events(self) -> list[int]:
        """Every update step, in order."""
        return list(range(self.every, self.end + 1, self.every))


def cosine_decay(step: int, end: int, initial: float, final: float = 0.005) -> float:
    """The release's CosineDecay of RigL's drop fraction: final + (initial - final) * (1 + cos(pi * t / end)) / 2,
    `final` from `end` on."""
    if step >= end:
        return final
    return final + (initial - final) * (1.0 + math.cos(math.pi * step / end)) / 2.0
