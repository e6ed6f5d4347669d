"""A pruned folder is a drop-in for its source: every non-weight file and folder is kept (sentence-transformers'
`modules.json`, `1_Pooling/`, a `2_Dense/` module with its own weights, tokenizer files), in memory and
streaming, from a local folder and from a Hub snapshot; and its model card names no local path."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizer

from smc_hf import MASKS_FILE, SparsityConfig, prune_checkpoint
from smc_hf.cli.prune import main
from smc_hf.io.folders import copy_auxiliary_files
from smc_hf.io.model_card import public_command, render_model_card, source_name

HIDDEN, DENSE_OUT = 16, 8
#: Files the fixture writes that hold the model's own weights in other formats: never copied.
OTHER_FORMATS = ("pytorch_model.bin", "onnx/model.onnx", "openvino/openvino_model.bin")
#: Written anew in the output (the sparsity block, the card), so their bytes differ from the source's.
REWRITTEN = ("config.json", "README.md")


def _json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def sentence_transformers_folder(path) -> str:
    """A tiny sentence-transformers model as the Hub stores one: BERT at the top, module folders beside it."""
    path = str(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40)
    BertModel(config, add_pooling_layer=False).save_pretrained(path, max_shard_size="20KB")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    BertTokenizer(os.path.join(path, "vocab.txt")).save_pretrained(path)
    modules = [("0", "", "Transformer"), ("1", "1_Pooling", "Pooling"), ("2", "2_Dense", "Dense"),
               ("3", "3_Normalize", "Normalize")]
    _json(os.path.join(path, "modules.json"),
          [{"idx": int(i), "name": i, "path": p, "type": f"sentence_transformers.models.{t}"} for i, p, t in modules])
    _json(os.path.join(path, "sentence_bert_config.json"), {"max_seq_length": 32, "do_lower_case": False})
    _json(os.path.join(path, "config_sentence_transformers.json"), {"similarity_fn_name": "cosine", "prompts": {}})
    _json(os.path.join(path, "1_Pooling", "config.json"),
          {"word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": True})
    _json(os.path.join(path, "2_Dense", "config.json"), {"in_features": HIDDEN, "out_features": DENSE_OUT, "bias": True,
                                                         "activation_function": "torch.nn.modules.linear.Identity"})
    save_file({"linear.weight": torch.randn(DENSE_OUT, HIDDEN), "linear.bias": torch.randn(DENSE_OUT)},
              os.path.join(path, "2_Dense", "model.safetensors"))
    os.makedirs(os.path.join(path, "3_Normalize"))
    with open(os.path.join(path, "README.md"), "w") as f:
        f.write("# the source's own card\n")
    for name in OTHER_FORMATS:  # the same weights exported elsewhere: stale and dense if copied
        os.makedirs(os.path.dirname(os.path.join(path, name)) or path, exist_ok=True)
        with open(os.path.join(path, name), "wb") as f:
            f.write(b"dense weights")
    os.makedirs(os.path.join(path, ".cache", "huggingface"))
    with open(os.path.join(path, ".cache", "huggingface", "download.lock"), "w") as f:
        f.write("x")
    return path


def assert_drop_in(source: str, output: str) -> None:
    """Every non-weight file of `source` is in `output` with equal bytes and every folder exists; the weights
    in other formats are not there."""
    for root, dirs, files in os.walk(source):
        rel = os.path.relpath(root, source)
        if rel.split(os.sep)[0].startswith("."):
            continue
        for d in dirs:
            if not d.startswith(".") and (rel, d) not in ((".", "onnx"), (".", "openvino")):
                assert os.path.isdir(os.path.join(output, rel, d)), os.path.join(rel, d)
        for name in files:
            path = os.path.normpath(os.path.join(rel, name))
            target = os.path.join(output, path)
            if path in OTHER_FORMATS:
                assert not os.path.exists(target), f"{path}: dense weights in another format were copied"
                continue
            if rel == "." and name.startswith("model"):  # the weights: written pruned (streaming keeps shard names)
                continue
            if path in REWRITTEN:
                assert os.path.isfile(target), path
                continue
            assert os.path.isfile(target), f"{path} missing from the pruned folder"
            assert open(target, "rb").read() == open(os.path.join(root, name), "rb").read(), path
    assert not os.path.exists(os.path.join(output, ".cache"))


def _load_with_sentence_transformers(folder: str, dense_from: str):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(folder, device="cpu")
    embedding = model.encode(["w1 w2 w3", "w4 w5"], convert_to_tensor=True)
    assert tuple(embedding.shape) == (2, DENSE_OUT)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)  # the Normalize module ran
    weights = dict(model.named_parameters())
    query = next(w for n, w in weights.items() if n.endswith("encoder.layer.0.attention.self.query.weight"))
    assert int((query == 0).sum()) > 0  # the pruned BERT, not the source's
    dense = next(w for n, w in weights.items() if n.endswith("linear.weight"))
    from safetensors.torch import load_file

    assert torch.equal(dense, load_file(os.path.join(dense_from, "2_Dense", "model.safetensors"))["linear.weight"])
    return model


@pytest.mark.parametrize("streaming", [False, True], ids=["memory", "streaming"])
def test_a_pruned_sentence_transformer_keeps_every_non_weight_file_and_loads(tmp_path, streaming):
    source = sentence_transformers_folder(tmp_path / "st-src")
    out = str(tmp_path / "out")
    prune_checkpoint(source, out, SparsityConfig(method="omp", sparsity=0.5), streaming=streaming, progress=False)
    assert_drop_in(source, out)
    assert os.path.isdir(os.path.join(out, "3_Normalize"))  # an empty module folder too
    weights = sorted(f for f in os.listdir(out) if f.endswith((".safetensors", ".index.json")))
    if streaming:  # the input's shards, rewritten under their names
        assert weights == sorted(f for f in os.listdir(source) if f.endswith((".safetensors", ".index.json"))) + [MASKS_FILE]
    else:  # one file: the source's shards and index are not copied beside it
        assert weights == ["model.safetensors", MASKS_FILE]
    _load_with_sentence_transformers(out, source)


def test_a_hub_snapshot_brings_the_module_folders_and_not_the_other_formats(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    repo = sentence_transformers_folder(tmp_path / "repo")
    files = [os.path.relpath(os.path.join(r, f), repo).replace(os.sep, "/") for r, _, fs in os.walk(repo) for f in fs]
    asked = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, ignore_patterns=None, **kwargs):
        asked["repo"] = repo_id
        snapshot = tmp_path / "snapshot"
        for name in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            os.makedirs((snapshot / name).parent, exist_ok=True)
            shutil.copy2(os.path.join(repo, name), snapshot / name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = str(tmp_path / "out")
    prune_checkpoint("someone/tiny-st", out, SparsityConfig(method="omp", sparsity=0.5), progress=False)
    assert asked["repo"] == "someone/tiny-st"
    downloaded = {os.path.relpath(os.path.join(r, f), tmp_path / "snapshot") for r, _, fs in os.walk(tmp_path / "snapshot")
                  for f in fs}
    assert not downloaded & set(OTHER_FORMATS) and ".cache/huggingface/download.lock" not in downloaded
    assert {"1_Pooling/config.json", "2_Dense/model.safetensors", "modules.json", "vocab.txt"} <= downloaded
    os.makedirs(tmp_path / "snapshot" / "3_Normalize")  # git keeps no empty folder; the Hub has none
    assert_drop_in(str(tmp_path / "snapshot"), out)
    card = open(os.path.join(out, "README.md")).read()
    assert "# someone/tiny-st pruned to" in card and "base_model: someone/tiny-st" in card
    assert "SentenceTransformer(" in card and str(tmp_path) not in card
    _load_with_sentence_transformers(out, repo)


@pytest.mark.parametrize("streaming", [False, True], ids=["memory", "streaming"])
def test_the_card_names_a_local_source_by_its_folder_name(tmp_path, streaming, monkeypatch):
    source = sentence_transformers_folder(tmp_path / "my-encoder")
    out = str(tmp_path / "results" / "pruned")
    argv = [source, "--method", "omp", "--sparsity", "0.5", "--output", out, "--progress", "false"]
    assert main(argv + (["--streaming"] if streaming else [])) == 0
    card = open(os.path.join(out, "README.md")).read()
    assert str(tmp_path) not in card and "/my-encoder" not in card
    assert "# my-encoder pruned to 50.00% sparsity" in card
    assert "smc-prune my-encoder --method omp --sparsity 0.5 --output pruned" in card
    assert "base_model" not in card.split("---")[1]  # a local folder is no Hub id for the metadata
    block = json.load(open(os.path.join(out, "config.json")))["sparsity"]
    assert block["source"] == "my-encoder" and str(tmp_path) not in json.dumps(block)


def test_public_command_and_source_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("models/enc")
    (tmp_path / "calib.jsonl").write_text("{}\n")
    command = ("smc-prune models/enc --calibration-file=" + str(tmp_path / "calib.jsonl")
               + " --tokenizer ~/tok --targets 'encoder\\..*' --output ../x/out --push-to-hub me/enc-sparse")
    assert public_command(command) == ("smc-prune enc --calibration-file=calib.jsonl --tokenizer tok "
                                       "--targets 'encoder\\..*' --output out --push-to-hub me/enc-sparse")
    assert public_command("smc-prune FacebookAI/roberta-large --output out") == \
        "smc-prune FacebookAI/roberta-large --output out"
    assert source_name("FacebookAI/roberta-large") == "FacebookAI/roberta-large"
    assert source_name(str(tmp_path / "models" / "enc") + "/") == "enc" and source_name("./models/enc") == "enc"
    block = {"method": "omp", "distribution": "global", "target_sparsity": 0.5, "achieved_sparsity": 0.5,
             "modules": {}, "smc_hf_version": "x"}
    card = render_model_card(block, base_model=str(tmp_path / "models" / "enc"), command=command)
    assert str(tmp_path) not in card and "# enc pruned" in card


def _minilm_folder():
    from tasks.model_aliases import ModelAliasError, resolve_model_alias

    try:
        return resolve_model_alias("minilm")
    except ModelAliasError as err:
        pytest.skip(str(err))


def test_the_real_minilm_prunes_into_a_sentence_transformer(tmp_path):
    source = _minilm_folder()
    out = str(tmp_path / "minilm-omp50")
    prune_checkpoint(source, out, SparsityConfig(method="omp", sparsity=0.5), streaming=True, progress=False)
    assert sorted(os.listdir(os.path.join(out, "1_Pooling"))) == ["config.json"]
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "tokenizer.json",
                 "vocab.txt", "1_Pooling/config.json"):
        assert open(os.path.join(out, name), "rb").read() == open(os.path.join(source, name), "rb").read(), name
    st = pytest.importorskip("sentence_transformers")
    dense, pruned = st.SentenceTransformer(source, device="cpu"), st.SentenceTransformer(out, device="cpu")
    sentences = ["A man is playing a guitar.", "Someone plays music.", "The stock market fell today."]
    a, b = dense.encode(sentences, convert_to_tensor=True), pruned.encode(sentences, convert_to_tensor=True)
    assert tuple(b.shape) == (3, 384) and torch.allclose(b.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(a, b)
    card = open(os.path.join(out, "README.md")).read()
    assert "# model pruned to" in card and os.path.dirname(source) not in card


def test_auxiliary_copy_follows_a_folder_link_once_and_never_copies_the_output_into_itself(tmp_path):
    source, outside = tmp_path / "src", tmp_path / "assets"
    (source / "1_Pooling").mkdir(parents=True)
    (source / "1_Pooling" / "config.json").write_text("{}")
    (source / "1_Pooling" / "up").symlink_to(source, target_is_directory=True)  # a link to an enclosing folder
    outside.mkdir()
    (outside / "prompt.txt").write_text("hello")
    (source / "assets").symlink_to(outside, target_is_directory=True)
    (source / "model.safetensors").write_bytes(b"weights")
    target = source / "pruned"  # the output inside the source folder
    target.mkdir()
    copied = copy_auxiliary_files(str(source), str(target))
    assert sorted(copied) == ["1_Pooling/config.json", "assets/prompt.txt"]
    assert not (target / "pruned").exists() and not (target / "1_Pooling" / "up").exists()
    assert (target / "assets" / "prompt.txt").read_text() == "hello"
