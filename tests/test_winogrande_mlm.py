"""WinoGrande scored as the paper (fairseq's winogrande task): masked-LM span scores and the margin loss (C2.1)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer

import run_glue_like
from smc_hf.core.selection import select_parameters
from tasks import DataArguments, ModelArguments, get_task
from tasks.winogrande_mlm import (MaskedSpanScoring, SpanCollator, encode_options, load_span_scorer, margin_loss,
                                  span_accuracy)
from tests.task_fixtures import tiny_roberta_dir, write_jsonl

SENTENCE = "The trophy did not fit into the suitcase because the _ was too large."
#: WinoGrande's release format (train_xl.jsonl / dev.jsonl), twin sentences with opposite answers.
ROWS = [
    {"qID": "t1-1", "sentence": SENTENCE, "option1": "trophy", "option2": "suitcase", "answer": "1"},
    {"qID": "t1-2", "sentence": SENTENCE.replace("large", "small"), "option1": "trophy", "option2": "suitcase",
     "answer": "2"},
    {"qID": "t2-1", "sentence": "Anna gave the book to Maria because _ had finished reading it.",
     "option1": "Anna", "option2": "Maria", "answer": "1"},
    {"qID": "t2-2", "sentence": "Anna gave the book to Maria because _ had asked to read it.",
     "option1": "Anna", "option2": "Maria", "answer": "2"},
]


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    texts = [r["sentence"].replace("_", f"{r['option1']} {r['option2']}") for r in ROWS]
    return tiny_roberta_dir(str(tmp_path_factory.mktemp("mlm")), texts, head="masked_lm")


def _direct_score(mlm, tokenizer, sentence: str, option: str) -> float:
    """The option's mean masked log-probability computed by hand with the plain masked LM on the whole sequence."""
    before, after = sentence.split("_")
    prefix = tokenizer(before.rstrip(), add_special_tokens=False)["input_ids"]
    span = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
    suffix = tokenizer(after, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tokenizer.bos_token_id, *prefix, *span, *suffix, tokenizer.eos_token_id]])
    start = 1 + len(prefix)
    masked = ids.clone()
    masked[0, start:start + len(span)] = tokenizer.mask_token_id
    with torch.no_grad():
        logp = torch.log_softmax(mlm(input_ids=masked).logits[0].float(), dim=-1)
    return float(sum(logp[start + k, tok] for k, tok in enumerate(span)) / len(span))


def test_option_score_is_the_mean_masked_log_probability_of_its_tokens(tiny_mlm):
    tokenizer = AutoTokenizer.from_pretrained(tiny_mlm)
    enc = encode_options(tokenizer, SENTENCE, ["trophy", "backpack"])  # "backpack": unseen, several tokens
    spans = [tokenizer.decode([t for t, m in zip(ids, span) if m])
             for ids, span in zip(enc["input_ids"], enc["span_mask"])]
    assert spans == [" trophy", " backpack"]
    assert tokenizer.decode(enc["input_ids"][1]) == "<s>" + SENTENCE.replace("_", "backpack") + "</s>"
    assert sum(enc["span_mask"][1]) > 1  # a multi-token span is averaged
    scorer = load_span_scorer(tiny_mlm, tokenizer.mask_token_id).eval()
    plain = AutoModelForMaskedLM.from_pretrained(tiny_mlm).eval()
    batch = SpanCollator(tokenizer.pad_token_id)([{**enc, "label": 0}])
    with torch.no_grad():
        out = scorer(**batch)
    expected = [_direct_score(plain, tokenizer, SENTENCE, o) for o in ("trophy", "backpack")]
    assert out.logits[0].tolist() == pytest.approx(expected, abs=1e-5)
    assert float(out.loss) == pytest.approx(float(margin_loss(out.logits, torch.tensor([0]), 5.0, 0.4)))


def test_margin_loss_on_a_hand_example():
    scores = torch.tensor([[-1.0, -1.2], [-2.0, -1.0], [-2.0, -1.0]])
    labels = torch.tensor([0, 1, 0])
    # q=-1, c=-1.2: 1 + 5*max(0, -0.2+0.4) = 2 | q=-1, c=-2: 1 + 0 = 1 | q=-2, c=-1: 2 + 5*(1+0.4) = 9
    assert float(margin_loss(scores, labels, 5.0, 0.4)) == pytest.approx((2.0 + 1.0 + 9.0) / 3)
    assert span_accuracy(scores.numpy(), labels.numpy()) == pytest.approx(200 / 3)
    assert span_accuracy([[-1.0, -1.0]], [1]) == 100.0  # a tie counts for the correct option (query >= candidate)


def test_task_defaults_to_the_papers_scoring_and_keeps_the_multiple_choice_head(tiny_mlm, tmp_path):
    task = get_task("winogrande")
    assert (task.default_scoring, task.margin_alpha, task.margin_beta) == ("mlm_margin", 5.0, 0.4)
    tokenizer = AutoTokenizer.from_pretrained(tiny_mlm)
    raw = task.load_raw(DataArguments(task="winogrande", train_file=write_jsonl(str(tmp_path / "t.jsonl"), ROWS)))
    model = task.load_model(ModelArguments(model_name_or_path=tiny_mlm), tokenizer, raw)
    assert isinstance(model, MaskedSpanScoring) and model.config.margin_alpha == 5.0
    selected = select_parameters(model)
    assert len(selected) == 2 * 6 and all(n.startswith("roberta.encoder.layer.") for n in selected)
    mc = task.load_model(ModelArguments(model_name_or_path=tiny_mlm, winogrande_scoring="multiple_choice"),
                         tokenizer, raw)
    assert type(mc).__name__ == "RobertaForMultipleChoice"
    with pytest.raises(ValueError, match="--winogrande_scoring 'mlm' is unknown; choose one of mlm_margin, "
                                         "multiple_choice"):
        task.check_model_arguments(ModelArguments(winogrande_scoring="mlm"))
    with pytest.raises(ValueError, match="--winogrande_scoring applies to winogrande only"):
        get_task("csqa").check_model_arguments(ModelArguments(winogrande_scoring="mlm_margin"))


def test_training_a_few_steps_lowers_the_margin_loss(tiny_mlm, tmp_path):
    torch.manual_seed(0)
    task = get_task("winogrande")
    tokenizer = AutoTokenizer.from_pretrained(tiny_mlm)
    data = DataArguments(task="winogrande", train_file=write_jsonl(str(tmp_path / "train_xl.jsonl"), ROWS))
    raw = task.load_raw(data)
    model = task.load_model(ModelArguments(model_name_or_path=tiny_mlm), tokenizer, raw)
    encoded = task.preprocess(raw, tokenizer, data, model)["train"]
    batch = task.data_collator(tokenizer, model)([encoded[i] for i in range(len(encoded))])
    assert batch["input_ids"].shape[:2] == (4, 2) and batch["labels"].tolist() == [0, 1, 0, 1]

    def loss_now():
        model.eval()
        with torch.no_grad():
            return float(model(**batch).loss)

    before = loss_now()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(20):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    after = loss_now()
    assert after < before - 1.0, (before, after)


def test_end_to_end_with_gmp_prunes_the_encoder_and_saves_a_plain_masked_lm(tiny_mlm, tmp_path):
    train = write_jsonl(str(tmp_path / "train_xl.jsonl"), ROWS * 2)
    dev = write_jsonl(str(tmp_path / "dev.jsonl"), ROWS)
    out = tmp_path / "out"
    results = run_glue_like.main([
        "--task", "winogrande", "--model_name_or_path", tiny_mlm, "--train_file", train, "--validation_file", dev,
        "--output_dir", str(out), "--sparsity_method", "gmp", "--sparsity", "0.5", "--sparsity_update_every", "1",
        "--max_steps", "4", "--warmup_steps", "0", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3", "--eval_strategy", "no",
        "--save_strategy", "no", "--logging_steps", "1", "--use_cpu", "True", "--report_to", "none",
    ])
    assert results["metric"] in {0.0, 25.0, 50.0, 75.0, 100.0}
    assert results["sparsity"]["achieved"] == pytest.approx(0.5, abs=0.01)
    modules = results["sparsity"]["modules"]
    assert len(modules) == 12 and all(name.startswith("roberta.encoder.layer.") for name in modules)
    saved = AutoModelForMaskedLM.from_pretrained(str(out))
    assert type(saved).__name__ == "RobertaForMaskedLM"
    masks = load_file(str(out / "sparsity_masks.safetensors"))
    assert set(masks) == set(modules)
    weights = dict(saved.named_parameters())
    for name, mask in masks.items():
        assert bool((weights[name][~mask.bool()] == 0).all()), name
    assert bool((saved.lm_head.dense.weight != 0).all()) and bool((saved.roberta.embeddings.word_embeddings.weight
                                                                    != 0).all())
    config = json.loads((out / "config.json").read_text())
    assert (config["margin_alpha"], config["margin_beta"]) == (5.0, 0.4)


def test_end_to_end_multiple_choice_switch(tiny_mlm, tmp_path):
    train = write_jsonl(str(tmp_path / "train_xl.jsonl"), ROWS)
    results = run_glue_like.main([
        "--task", "winogrande", "--model_name_or_path", tiny_mlm, "--train_file", train, "--validation_file", train,
        "--winogrande_scoring", "multiple_choice", "--output_dir", str(tmp_path / "out"), "--sparsity_method",
        "omp_before", "--sparsity", "0.5", "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "True", "--report_to", "none",
    ])
    assert results["metric"] in {0.0, 25.0, 50.0, 75.0, 100.0}
    assert all(name.startswith("roberta.encoder.") for name in results["sparsity"]["modules"])
