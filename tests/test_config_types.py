"""Regression tests for issue 15 section 4, bugs 1 and 2 and the poor messages of the config and registry:
every SparsityConfig field is type-checked at construction, with a message naming the field."""

import json

import pytest
from transformers import HfArgumentParser

from smc_hf import SparsityConfig
from smc_hf.methods import METHODS, build_method


@pytest.mark.parametrize("value", ["false", "False", "true", "0", 0, 1])
def test_skip_dense_phase_must_be_a_real_boolean(value):
    with pytest.raises(ValueError, match="skip_dense_phase must be true or false") as err:
        SparsityConfig(method="omp_after", sparsity=0.5, skip_dense_phase=value)
    if isinstance(value, str):
        assert "without quotes" in str(err.value)


def test_skip_dense_phase_string_in_a_json_config_is_refused():
    text = json.dumps({"method": "omp_after", "sparsity": 0.5, "skip_dense_phase": "false"})
    with pytest.raises(ValueError, match="skip_dense_phase must be true or false.*the string 'false'"):
        SparsityConfig.from_json_string(text)


def test_the_cli_parser_still_turns_its_strings_into_booleans():
    parser = HfArgumentParser(SparsityConfig)
    (off,) = parser.parse_args_into_dataclasses(["--method", "omp_after", "--sparsity", "0.5",
                                                 "--skip_dense_phase", "false"])
    (on,) = parser.parse_args_into_dataclasses(["--method", "omp_after", "--sparsity", "0.5", "--skip_dense_phase"])
    assert off.skip_dense_phase is False and on.skip_dense_phase is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="lth", sparsity=0.2, rewind_step=2.5), "rewind_step must be a whole number, got 2.5"),
        (dict(method="gmp", sparsity=0.5, update_every=2.5), "update_every must be a whole number, got 2.5"),
        (dict(method="random", sparsity=0.5, mask_seed="abc"), "mask_seed must be a whole number, got the string 'abc'"),
        (dict(method="random", sparsity=0.5, mask_seed=2**70), "mask_seed = 1180591620717411303424 does not fit"),
        (dict(method="random", sparsity=0.5, mask_seed=2**40), "mask_seed must be in [0, 2**32 - 1]"),
        (dict(method="random", sparsity=0.5, mask_seed=-1), "mask_seed must be in [0, 2**32 - 1]"),
        (dict(method="gmp", sparsity=0.5, begin_step=float("nan")), "begin_step must be a finite number, got nan"),
        (dict(method="gmp", sparsity=0.5, erk_power_scale=float("nan")), "erk_power_scale must be a finite number"),
        (dict(method="gmp", sparsity=0.5, end_step=float("inf")), "end_step must be a finite number, got inf"),
        (dict(method="gmp", sparsity=float("nan")), "sparsity must be a finite number"),
        (dict(method="gmp", sparsity=0.5, targets=[1]), "targets must be a list of strings (regexes); item 0 is 1"),
        (dict(method="gmp", sparsity=0.5, ignore=5), "ignore must be a list of strings"),
        (dict(method="gmp", sparsity=0.5, snip_batches="3"), "snip_batches must be a whole number, got the string '3'"),
        (dict(method="gmp", sparsity=0.5, lth_rate="0.2"), "lth_rate must be a number, got the string '0.2'"),
        (dict(method="gmp", sparsity=0.5, distribution=3), "distribution must be a string, got 3 (int)"),
        (dict(method=None, sparsity=0.5), "method must not be None; leave it out for its default 'dense'"),
        (dict(method="gmp", sparsity=0.5, obert_num_grads=True), "obert_num_grads must be a whole number, got True"),
    ],
)
def test_wrong_types_fail_at_construction_naming_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        SparsityConfig(**kwargs)
    assert message in str(err.value)


def test_integral_floats_and_ints_are_normalised():
    cfg = SparsityConfig(method="lth", sparsity=0.2, rewind_step=2.0, erk_power_scale=1, targets="query",
                         mask_seed=7.0)
    assert (cfg.rewind_step, type(cfg.rewind_step)) == (2, int)
    assert (cfg.mask_seed, type(cfg.mask_seed)) == (7, int)
    assert cfg.erk_power_scale == 1 and cfg.targets == ["query"]


def test_json_config_accepts_the_cli_alias_keys():
    cfg = SparsityConfig.from_dict({"sparsity_method": "gmp", "sparsity": 0.5, "sparsity-distribution": "erk"})
    assert (cfg.method, cfg.distribution) == ("gmp", "erk")
    with pytest.raises(ValueError, match="'method' is given twice"):
        SparsityConfig.from_dict({"sparsity_method": "gmp", "method": "gmp", "sparsity": 0.5})


def test_every_method_knows_its_registered_name():
    for name in METHODS.names():
        assert METHODS.get(name).name == name
    with pytest.raises(ValueError, match="method 'gmp' needs sparsity > 0"):
        SparsityConfig(method="gmp", sparsity=0.0)
    method = build_method(SparsityConfig(method="lth", sparsity=0.2))
    with pytest.raises(ValueError, match="method 'lth' needs training"):
        method.one_shot(None)
