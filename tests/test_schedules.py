"""GMP's schedule is the release's: updates at the multiples of update_every between 10% and 80% of training,
plus (by default) a last update exactly at 80% that reaches the target."""

import pytest

from smc_hf import SparsityConfig
from smc_hf.core.context import PruneContext
from smc_hf.methods.gradual import GMP
from smc_hf.core.schedules import GradualSchedule, cubic_sparsity


def _gmp(max_steps, **kwargs):
    method = GMP(SparsityConfig(method="gmp", sparsity=0.59, **kwargs))
    method.setup(PruneContext(model=None, masks=None, max_steps=max_steps))
    return method


def test_csqa_length_run_prunes_at_the_release_steps_and_reaches_the_target_at_80_percent():
    """CSQA: 3000 steps, --update-frequency 500, t0 = 300, t1 = 2400: the release prunes at 500, 1000, 1500 and
    2000; smc_hf adds 2400, where the cubic curve is at the target."""
    method = _gmp(3000, update_every=500)
    assert (method.schedule.begin, method.schedule.end) == (300, 2400)
    assert method.schedule.events() == [500, 1000, 1500, 2000, 2400]
    assert [t for t in range(1, 3001) if method.schedule.is_update(t)] == [500, 1000, 1500, 2000, 2400]
    assert method.target_at(2400) == 0.59
    assert method.target_at(500) == pytest.approx(0.59 * (1 - (1 - 200 / 2100) ** 3))
    assert _gmp(3000).schedule.events() == [500, 1000, 1500, 2000, 2400]  # default interval: a sixth of training


def test_exact_end_off_is_the_release_schedule_and_its_99_percent_end():
    method = _gmp(3000, update_every=500, exact_end=False)
    assert method.schedule.events() == [500, 1000, 1500, 2000]
    assert method.target_at(2000) == pytest.approx(0.59 * (1 - (400 / 2100) ** 3))  # ~0.993 of the target
    assert not method.schedule.is_update(2400)


def test_arithmetic_length_run_prunes_every_1000_steps():
    method = _gmp(19250, update_every=1000)
    assert (method.schedule.begin, method.schedule.end) == (1925, 15400)
    assert method.schedule.events() == list(range(2000, 15001, 1000)) + [15400]


def test_a_schedule_that_never_prunes_is_an_error_before_training():
    config = SparsityConfig(method="gmp", sparsity=0.5, update_every=1000, exact_end=False)
    with pytest.raises(ValueError, match="the schedule never prunes: no multiple of update_every = 1000"):
        GradualSchedule.from_config(config, 300, begin=0.1, end=0.8)
    with pytest.raises(ValueError, match="exact_end alone would prune once, at step 240: one-shot, not gradual"):
        GradualSchedule.from_config(SparsityConfig(method="gmp", sparsity=0.5, update_every=1000), 300,
                                    begin=0.1, end=0.8)


def test_cubic_curve_is_zhu_and_gupta():
    assert cubic_sparsity(300, 300, 2400, 0.5) == 0.0
    assert cubic_sparsity(1350, 300, 2400, 0.5) == pytest.approx(0.5 * (1 - 0.5 ** 3))
