"""Seeds derived from a run's seed, by one formula.

Every random choice the library makes itself (random scores, calibration shuffles, streamed random keys)
draws from a generator seeded by `derived_seed(run seed, offset)`: it reproduces from the run's seed alone,
is equal on every rank, and differs between rounds, steps and tensors through the offset.
"""

from __future__ import annotations

SEED_MODULUS = 2**63  # torch.Generator.manual_seed takes any non-negative int below 2**64


def derived_seed(seed: int, offset: int) -> int:
    return (int(seed) * 1000003 + int(offset)) % SEED_MODULUS
