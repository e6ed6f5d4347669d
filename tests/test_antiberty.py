"""`--model_name_or_path antiberty`: the package's pickle becomes a safetensors BERT folder once, then only that is read."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

import tasks.antiberty as ab
from tasks.model_aliases import resolve_model_alias

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"ACDEFGHIKLMNPQRSTVWY"]
CONFIG = dict(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=64, type_vocab_size=2, pad_token_id=0, model_type="bert",
              architectures=["AntiBERTy"], _name_or_path="/home/someone/checkpoint", transformers_version="4.5.1")


@pytest.fixture
def stand_in(tmp_path):
    """A folder laid out as the antiberty package, its pickle written here from a seeded BertModel (with the
    package's key names, its pre-training heads and the old position_ids buffer); returns (folder, reference)."""
    torch.manual_seed(0)
    reference = BertModel(BertConfig(**{k: v for k, v in CONFIG.items() if k not in ("architectures", "_name_or_path")}))
    reference.eval()
    state = {f"bert.{k}": v for k, v in reference.state_dict().items()}
    state["bert.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    state["cls.species.weight"] = torch.randn(6, 16)
    state["cls.predictions.bias"] = torch.randn(len(VOCAB))
    pkg = tmp_path / "antiberty"
    ckpt = pkg / ab.CHECKPOINT_SUBDIR
    ckpt.mkdir(parents=True)
    torch.save(state, ckpt / "pytorch_model.bin")
    (ckpt / "config.json").write_text(json.dumps(CONFIG))
    (pkg / ab.VOCAB_SUBPATH).write_text("\n".join(VOCAB) + "\n")
    return pkg, reference


def test_conversion_loads_with_from_pretrained_and_gives_equal_outputs(stand_in, tmp_path):
    pkg, reference = stand_in
    folder = ab.antiberty_folder(str(pkg), root=str(tmp_path / "cache"), version="9.9")
    assert folder == str(tmp_path / "cache" / "antiberty-9.9")
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= set(os.listdir(folder))
    assert not any(name.endswith((".bin", ".pkl", ".pt")) for name in os.listdir(folder))
    assert [p for p in os.listdir(tmp_path / "cache") if "staging" in p] == []
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.do_lower_case is False
    batch = tokenizer(["M K V L", "A C D E F G H"], padding=True, return_tensors="pt")
    assert tokenizer.unk_token_id not in batch["input_ids"].tolist()[0]
    assert tokenizer.convert_ids_to_tokens(batch["input_ids"][0])[1:5] == ["M", "K", "V", "L"]
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model).__name__ == "BertModel"
    with torch.no_grad():
        got, want = model(**batch), reference(**batch)
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)
    assert torch.equal(got.pooler_output, want.pooler_output)


def test_second_call_reads_no_pickle(stand_in, tmp_path, monkeypatch):
    pkg, _ = stand_in
    first = ab.antiberty_folder(str(pkg), root=str(tmp_path / "cache"), version="9.9")
    stamp = os.path.getmtime(os.path.join(first, "model.safetensors"))

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called after the conversion")

    monkeypatch.setattr(torch, "load", no_pickle)
    os.remove(pkg / ab.CHECKPOINT_SUBDIR / "pytorch_model.bin")
    assert ab.antiberty_folder(str(pkg), root=str(tmp_path / "cache"), version="9.9") == first
    assert os.path.getmtime(os.path.join(first, "model.safetensors")) == stamp


def test_a_checkpoint_that_does_not_fill_the_model_is_refused_and_leaves_no_folder(stand_in, tmp_path):
    pkg, _ = stand_in
    ckpt = pkg / ab.CHECKPOINT_SUBDIR / "pytorch_model.bin"
    state = torch.load(ckpt, weights_only=True)
    del state["bert.encoder.layer.1.output.dense.weight"]
    torch.save(state, ckpt)
    with pytest.raises(ab.AntibertyConversionError, match=r"missing \['encoder.layer.1.output.dense.weight'\]"):
        ab.antiberty_folder(str(pkg), root=str(tmp_path / "cache"), version="9.9")
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


def test_a_pickle_that_is_not_tensors_only_is_refused(stand_in, tmp_path):
    pkg, _ = stand_in
    torch.save({"bert.x": torch.zeros(1), "obj": ab.AntibertyConversionError("x")},
               pkg / ab.CHECKPOINT_SUBDIR / "pytorch_model.bin")
    with pytest.raises(ab.AntibertyConversionError, match="not readable as a tensors-only checkpoint"):
        ab.antiberty_folder(str(pkg), root=str(tmp_path / "cache"), version="9.9")


@pytest.mark.skipif(importlib.util.find_spec("antiberty") is None, reason="antiberty==0.1.3 (the `real` extra) not installed")
def test_real_package_alias(tmp_path, monkeypatch):
    monkeypatch.setenv(ab.CACHE_ENV, str(tmp_path))
    folder = resolve_model_alias("antiberty")
    assert os.path.dirname(folder) == str(tmp_path)
    model = AutoModel.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == 25_758_720
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("M K V L")["input_ids"]
    assert tokenizer.unk_token_id not in ids and len(ids) == 6
