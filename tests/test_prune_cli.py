"""`smc-prune` and `smc_hf.prune_checkpoint`: end to end on tiny local checkpoints, a mocked Hub, bad input."""

import json
import os

import pytest
import torch
from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification

from smc_hf import MASKS_FILE, SparsityConfig, prune_checkpoint, prune_model
from smc_hf.io.sparsity_block import read_sparsity_block
from smc_hf.cli.prune import main
from smc_hf.pruning.loading import from_compressed
from smc_hf.io.mask_file import read_masks
from smc_hf.methods import METHODS
from tests.helpers import tiny_roberta
from tests.task_fixtures import csqa_rows, tiny_esm_dir, tiny_roberta_dir, write_jsonl


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src"
    tiny_roberta().save_pretrained(path, max_shard_size="8KB")
    return str(path)


def _pruned_count(folder):
    return sum(int((~m).sum()) for m in read_masks(os.path.join(folder, MASKS_FILE)).values())


def test_cli_prunes_to_the_exact_count_and_documents_the_command(tmp_path, source, capsys):
    out = str(tmp_path / "out")
    argv = [source, "--method", "omp", "--sparsity", "0.5", "--distribution", "global", "--output", out,
            "--progress", "false"]
    assert main(argv) == 0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    reference = tiny_roberta()
    masks = prune_model(reference, SparsityConfig(method="omp", sparsity=0.5))
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    assert _pruned_count(out) == round(0.5 * masks.numel())
    card = open(os.path.join(out, "README.md")).read()
    public = ["src", *argv[1:]]
    public[public.index(out)] = "out"
    assert "smc-prune " + " ".join(public) in card and "| **overall** |" in card
    assert "50.00%" in capsys.readouterr().out


def test_streaming_compressed_output_equals_the_in_memory_result(tmp_path, source):
    cfg = SparsityConfig(method="omp", sparsity=0.7)
    prune_checkpoint(source, str(tmp_path / "mem"), cfg, progress=False)
    report = prune_checkpoint(source, str(tmp_path / "stream"), cfg, streaming=True, compress=True, progress=False)
    assert report.achieved == pytest.approx(0.7, abs=1e-3)
    dense = AutoModelForSequenceClassification.from_pretrained(tmp_path / "mem")
    restored = from_compressed(str(tmp_path / "stream"))
    for name, value in dense.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name
    assert read_sparsity_block(tmp_path / "stream")["weights_format"] == "bitmask_compressed"
    card = open(tmp_path / "stream" / "README.md").read()
    assert "--streaming --compress" in card and "from_compressed" in card


def test_push_to_hub_uploads_the_finished_folder(tmp_path, source, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message=None, **kwargs):
            calls.append(("upload", repo_id, sorted(os.listdir(folder_path)), commit_message))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = str(tmp_path / "out")
    assert main([source, "--method", "random", "--sparsity", "0.3", "--output", out, "--push-to-hub", "me/tiny-sparse",
                 "--private", "--progress", "false"]) == 0
    assert calls[0] == ("create", "me/tiny-sparse", True, True)
    kind, repo, files, message = calls[1]
    assert kind == "upload" and repo == "me/tiny-sparse"
    assert {"README.md", "config.json", MASKS_FILE, "model.safetensors"} <= set(files)
    assert "--push-to-hub me/tiny-sparse" in message


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, source, capsys):
    out = str(tmp_path / "out")
    assert main([source, "--method", "snip", "--sparsity", "0.5", "--output", out]) == 1
    assert "calibration" in capsys.readouterr().err
    assert main([source, "--method", "rigl", "--sparsity", "0.5", "--output", out]) == 1
    assert "needs training" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([source, "--method", "omp", "--sparsity", "1.5", "--output", out])
    assert exit_info.value.code == 2 and "sparsity must be in [0, 1)" in capsys.readouterr().err
    shards = sorted(n for n in os.listdir(source) if n.startswith("model-"))
    os.remove(os.path.join(source, shards[0]))
    assert main([source, "--method", "omp", "--sparsity", "0.5", "--output", out]) == 1
    assert shards[0] in capsys.readouterr().err
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")
    os.makedirs(out)
    open(os.path.join(out, "precious"), "w").close()
    tiny_roberta().save_pretrained(tmp_path / "ok")
    assert main([str(tmp_path / "ok"), "--method", "omp", "--sparsity", "0.5", "--output", out]) == 1
    assert "--overwrite" in capsys.readouterr().err and os.listdir(out) == ["precious"]


def test_remote_code_is_off_unless_asked(tmp_path, source, monkeypatch):
    with open(os.path.join(source, "config.json")) as f:
        config = json.load(f)
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    config["model_type"] = "evil"
    with open(os.path.join(source, "config.json"), "w") as f:
        json.dump(config, f)
    (tmp_path / "src" / "evil.py").write_text("open('PWNED', 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        prune_checkpoint(source, str(tmp_path / "out"), SparsityConfig(method="omp", sparsity=0.5), progress=False)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.skipif("snip" not in METHODS, reason="SNIP is not registered")
def test_snip_calibrates_on_a_local_file(tmp_path):
    source = tiny_esm_dir(str(tmp_path / "esm"))
    rows = [{"sequence": "MKTAYIAKQR" * (1 + i % 3), "label": i % 2} for i in range(12)]
    calib = write_jsonl(str(tmp_path / "calib.jsonl"), rows)
    cfg = SparsityConfig(method="snip", sparsity=0.5)
    prune_checkpoint(source, str(tmp_path / "snip"), cfg, calibration_file=calib, calibration_text_column="sequence",
                     calibration_label_column="label", calibration_samples=8, calibration_batch_size=4, progress=False)
    prune_checkpoint(source, str(tmp_path / "omp"), SparsityConfig(method="omp", sparsity=0.5), progress=False)
    snip, omp = (read_masks(str(tmp_path / n / MASKS_FILE)) for n in ("snip", "omp"))
    total = sum(m.numel() for m in snip.values())
    assert _pruned_count(str(tmp_path / "snip")) == round(0.5 * total)
    assert any(not torch.equal(snip[n], omp[n]) for n in snip)
    with pytest.raises(ValueError, match="no label column 'missing'"):
        prune_checkpoint(source, str(tmp_path / "x"), cfg, calibration_file=calib, calibration_text_column="sequence",
                         calibration_label_column="missing", progress=False)


@pytest.mark.skipif("obert" not in METHODS, reason="oBERT is not registered")
def test_obert_calibrates_on_a_task(tmp_path):
    rows = csqa_rows(8)
    texts = [r["question"]["stem"] for r in rows] + ["bank library store mall park Q: A:"]
    source = tiny_roberta_dir(str(tmp_path / "rob"), texts)
    calib = write_jsonl(str(tmp_path / "csqa.jsonl"), rows)
    cfg = SparsityConfig(method="obert", sparsity=0.5, obert_num_grads=2, obert_block_size=4)
    prune_checkpoint(source, str(tmp_path / "out"), cfg, calibration_task="csqa", calibration_file=calib,
                     calibration_samples=4, calibration_batch_size=2, progress=False)
    model = AutoModelForMultipleChoice.from_pretrained(tmp_path / "out")
    block = read_sparsity_block(tmp_path / "out")
    assert block["method"] == "obert" and type(model).__name__ == "RobertaForMultipleChoice"
    total = block["selected_numel"]
    assert _pruned_count(str(tmp_path / "out")) == round(0.5 * total)


def test_model_class_option_and_compressed_sources(tmp_path, source):
    cfg = SparsityConfig(method="omp", sparsity=0.5)
    prune_checkpoint(source, str(tmp_path / "base"), cfg, model_class="AutoModel", compress=True, progress=False)
    masks = read_masks(str(tmp_path / "base" / MASKS_FILE))
    assert masks and all(n.startswith("encoder.layer.") for n in masks)
    with pytest.raises(ValueError, match="decompress_folder"):
        prune_checkpoint(str(tmp_path / "base"), str(tmp_path / "again"), cfg, progress=False)
    with pytest.raises(ValueError, match="not an AutoModel"):
        prune_checkpoint(source, str(tmp_path / "bad"), cfg, model_class="os.system", progress=False)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "again").exists()
