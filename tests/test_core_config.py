import json

import pytest
from transformers import HfArgumentParser, TrainingArguments

from smc_hf import SparsityConfig, available_methods


def test_json_round_trip_keeps_every_field():
    cfg = SparsityConfig(method="gmp", sparsity=0.59, distribution="erk", targets=["query"], end_step=0.5)
    again = SparsityConfig.from_json_string(cfg.to_json_string())
    assert again == cfg
    assert json.loads(cfg.to_json_string())["distribution"] == "erk"


def test_hf_argument_parser_reads_the_benchmark_flags(tmp_path):
    parser = HfArgumentParser((SparsityConfig, TrainingArguments))
    cfg, targs = parser.parse_args_into_dataclasses(
        ["--sparsity_method", "gmp", "--sparsity", "0.59", "--sparsity_distribution", "uniform",
         "--sparsity_ignore", "layer\\.0\\.", "--output_dir", str(tmp_path)]
    )
    assert (cfg.method, cfg.sparsity, cfg.distribution, cfg.ignore) == ("gmp", 0.59, "uniform", ["layer\\.0\\."])
    assert targs.output_dir == str(tmp_path)


def test_alias_resolves_to_canonical_name():
    assert SparsityConfig(method="omp", sparsity=0.5).method == "omp_before"
    assert SparsityConfig(method="RANDOM", sparsity=0.5).method == "random_before"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="gmp", sparsity=1.5), "sparsity must be in [0, 1), got 1.5"),
        (dict(method="gmp", sparsity=-0.1), "sparsity must be in [0, 1)"),
        (dict(method="gmp", sparsity=1.0), "sparsity must be in [0, 1)"),
        (dict(method="magic", sparsity=0.5), "unknown sparsity method 'magic'; known: dense, fixed, gmp"),
        (dict(method="gmp", sparsity=0.5, distribution="lognormal"), "unknown distribution 'lognormal'"),
        (dict(method="dense", sparsity=0.5), "method 'dense' prunes nothing"),
        (dict(method="gmp", sparsity=0.0), "needs sparsity > 0"),
        (dict(method="gmp", sparsity=0.5, begin_step=0.8, end_step=0.2), "begin_step (0.8) must come before"),
        (dict(method="gmp", sparsity=0.5, end_step=2.5), "end_step must be a fraction"),
        (dict(method="gmp", sparsity=0.5, update_every=0), "update_every must be >= 1"),
        (dict(method="gmp", sparsity=0.5, targets=["("]), "targets: invalid regex '('"),
        (dict(method="gmp", sparsity=0.5, lth_rate=1.0), "lth_rate must be in (0, 1)"),
        (dict(method="gmp", sparsity="half"), "sparsity must be a number"),
    ],
)
def test_bad_input_is_rejected_with_a_message_naming_it(kwargs, message):
    with pytest.raises(ValueError) as err:
        SparsityConfig(**kwargs)
    assert message in str(err.value)


def test_unknown_json_field_is_rejected():
    with pytest.raises(ValueError, match="unknown SparsityConfig fields: sparsty"):
        SparsityConfig.from_dict({"method": "gmp", "sparsty": 0.5})


def test_core_methods_are_registered():
    assert {"dense", "fixed", "omp_before", "random_before", "omp_after", "random_after", "gmp"} <= set(
        available_methods()
    )
