"""GTS tree solver: overfitting a few real MAWPS problems, beam search, save/load, greedy, pruning coverage."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer, RobertaConfig

from smc_hf.core.selection import select_parameters
from tasks import DataArguments, ModelArguments, get_task
from tasks.arithmetic import ArithmeticCollator, gold_value
from tasks.arithmetic_model import ArithmeticSolver
from tasks.gts_model import GTSConfig, GTSSolver
from tasks.prefix_expr import OPERATORS, evaluate_prefix, is_complete_prefix
from tests.task_fixtures import tiny_roberta_dir

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "arithmetic")
FOLD0 = os.path.join(DATA, "cv_mawps", "fold0")


def _random_solver(seed=0, **kwargs):
    torch.manual_seed(seed)
    encoder = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=40)
    sizes = dict(max_num_slots=4, decoder_hidden=24, op_embedding_size=8, rnn_layers=1, max_output_length=7)
    config = GTSConfig(encoder_config=encoder.to_dict(), fixed_tokens=list(OPERATORS[:4]) + ["1.0", "100.0"],
                       **{**sizes, **kwargs})
    return GTSSolver(config).eval()


def _random_batch(seed=1, batch=6):
    generator = torch.Generator().manual_seed(seed)
    positions = torch.tensor([[3, 5, -1, -1], [2, -1, -1, -1], [1, 2, 4, 6], [7, 8, -1, -1], [4, 5, 6, -1],
                              [2, 9, -1, -1]])[:batch]
    mask = torch.ones(batch, 12, dtype=torch.long)
    mask[1, 9:] = 0
    return {"input_ids": torch.randint(3, 50, (batch, 12), generator=generator), "attention_mask": mask,
            "number_positions": positions}


@pytest.fixture(scope="module")
def mawps_batch(tmp_path_factory):
    """Six real fold-0 training problems, tokenised by the task with a tiny RoBERTa fitted to MAWPS."""
    task = get_task("mawps")
    raw = task.load_raw(DataArguments(task="mawps", data_dir=FOLD0, max_train_samples=6, max_eval_samples=2))
    questions = task.load_raw(DataArguments(task="mawps", data_dir=FOLD0))["train"]["question"]
    torch.manual_seed(0)  # the encoder's random weights, whatever ran before this module
    path = tiny_roberta_dir(str(tmp_path_factory.mktemp("enc")), questions, head="encoder", vocab_size=600)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = task.load_model(ModelArguments(model_name_or_path=path), tokenizer, raw)
    processed = task.preprocess(raw, tokenizer, DataArguments(task="mawps"), model)
    batch = ArithmeticCollator(tokenizer.pad_token_id, model.config.max_num_slots)(list(processed["train"]))
    return {"task": task, "raw": raw, "path": path, "tokenizer": tokenizer, "batch": batch, "model": model}


def test_mawps_defaults_to_gts_and_seq_is_selectable(mawps_batch):
    assert isinstance(mawps_batch["model"], GTSSolver)
    config = mawps_batch["model"].config
    assert config.fixed_tokens[:4] == ["+", "-", "*", "/"] and config.num_operators == 4
    assert (config.decoder_hidden, config.decoder_dropout, config.beam_size, config.rnn_layers) == (512, 0.5, 5, 0)
    task, raw, path = mawps_batch["task"], mawps_batch["raw"], mawps_batch["path"]
    seq = task.load_model(ModelArguments(model_name_or_path=path, decoder="seq"), mawps_batch["tokenizer"], raw)
    assert isinstance(seq, ArithmeticSolver)
    with pytest.raises(ValueError, match=r"--decoder 'tree' is unknown; choose one of \['gts', 'seq'\]"):
        task.load_model(ModelArguments(model_name_or_path=path, decoder="tree"), mawps_batch["tokenizer"], raw)


def test_saved_solver_reloads_as_its_kind(mawps_batch, tmp_path):
    task, raw, tokenizer = mawps_batch["task"], mawps_batch["raw"], mawps_batch["tokenizer"]
    mawps_batch["model"].save_pretrained(tmp_path)
    assert isinstance(task.load_model(ModelArguments(model_name_or_path=str(tmp_path)), tokenizer, raw), GTSSolver)
    with pytest.raises(ValueError, match="a saved 'gts' solver, but --decoder seq"):
        task.load_model(ModelArguments(model_name_or_path=str(tmp_path), decoder="seq"), tokenizer, raw)


def test_overfits_six_problems_and_beam_search_solves_them(mawps_batch):
    batch, raw = mawps_batch["batch"], mawps_batch["raw"]["train"]
    torch.manual_seed(0)
    model = GTSSolver.from_encoder(mawps_batch["path"], mawps_batch["model"].config.fixed_tokens,
                                   decoder_hidden=64, op_embedding_size=16, rnn_layers=1, decoder_dropout=0.0)
    for module in model.modules():  # the encoder's own dropout too: the test is about fitting, not noise
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    vocab = model.config.output_vocab
    gold = [gold_value(equation, numbers, answer)
            for numbers, equation, answer in zip(raw["numbers"], raw["equation"], raw["answer"])]

    def solved():
        model.eval()
        with torch.no_grad():
            rows = model(**{k: v for k, v in batch.items() if k != "labels"}).predictions.tolist()
        model.train()
        tokens = [[vocab[i] for i in row if i >= 0] for row in rows]
        assert all(is_complete_prefix(t) for t in tokens), tokens  # beam search emits complete expressions only
        return [evaluate_prefix(t, numbers) for t, numbers in zip(tokens, raw["numbers"])]

    model.train()
    losses = []
    # Fitting six problems takes 80-160 steps depending on floating-point summation order (thread count):
    # train in rounds of 40 until beam search solves all six, at most 400 steps.
    for _ in range(10):
        for _ in range(40):
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        answers = solved()
        if all(abs(a - g) <= 1e-4 for a, g in zip(answers, gold)):
            break
    assert losses[4] < losses[0] and losses[-1] < 0.05 * losses[0], losses[::10]
    assert answers == pytest.approx(gold, abs=1e-4), (len(losses), answers, gold)


def test_labels_must_be_complete_prefix_expressions_in_training():
    model = _random_solver().train()
    batch = _random_batch(batch=2)
    batch["labels"] = torch.tensor([[2, 6, 7], [0, 6, -100]])  # "* n0 n1", then "+ n0" (one operand short)
    with pytest.raises(ValueError, match=r"labels of example 1 are not one complete prefix expression"):
        model(**batch)
    model.eval()  # evaluation leaves such an example out of the loss instead
    kept = model(**batch).loss
    batch["labels"] = batch["labels"][:1]
    alone = model(**{k: v[:1] for k, v in batch.items()}).loss
    assert kept.item() == pytest.approx(alone.item(), rel=1e-5)


def test_beam_one_equals_batched_greedy_and_beams_are_complete():
    model = _random_solver()
    batch = _random_batch()
    with torch.no_grad():
        enc = model._encode(batch["input_ids"], batch["attention_mask"], None, batch["number_positions"])
        greedy = model._greedy(enc)
        assert greedy == [model._beam_search(enc, b, 1) for b in range(6)]
        beam = model(**batch).predictions
    vocab = model.config.output_vocab
    for row, positions in zip(beam.tolist(), batch["number_positions"].tolist()):
        tokens = [vocab[i] for i in row if i >= 0]
        assert is_complete_prefix(tokens) and len(tokens) <= 7
        assert all(positions[int(t[6:])] >= 0 for t in tokens if t.startswith("number"))
    assert model(**batch, beam_size=1).predictions.tolist() == [g + [-100] * (7 - len(g)) for g in greedy]


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = _random_solver(rnn_layers=2)
    batch = {**_random_batch(), "labels": torch.tensor([[2, 6, 7, -100, -100]] * 6)}
    before = model(**batch)
    model.save_pretrained(tmp_path)
    loaded = GTSSolver.from_pretrained(tmp_path).eval()
    after = loaded(**batch)
    assert torch.equal(before.loss, after.loss) and torch.equal(before.predictions, after.predictions)
    assert loaded.config.to_dict()["fixed_tokens"] == ["+", "-", "*", "/", "1.0", "100.0"]


@pytest.mark.parametrize("rnn_layers", [0, 2])
def test_default_pruning_selection_covers_every_decoder_matrix(rnn_layers):
    model = _random_solver(rnn_layers=rnn_layers)
    selected = set(select_parameters(model))
    linear = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    decoder = {n for n in linear if n.startswith(("predict.", "generate.", "merge.", "enc_proj."))}
    assert selected == linear
    assert len(decoder) == 15 + (rnn_layers == 0)  # Prediction 5 + attention 2 + operand score 2, Generate 4, Merge 2
    assert not any(name.startswith(("rnn.", "encoder.embeddings.")) for name in selected)


def test_task_selection_prunes_every_gts_matrix_but_the_constants(mawps_batch):
    task, model = mawps_batch["task"], mawps_batch["model"]
    assert model.predict.dropout.p == 0.5 and model.embed_dropout.p == 0.5
    targets, ignore = task.sparsity_selection(ModelArguments())
    names = set(select_parameters(model, targets=targets, ignore=ignore))
    matrices = {n for n, p in model.named_parameters() if p.dim() >= 2}
    assert names == matrices - {"predict.constants"}
    assert {"generate.embeddings.weight", "predict.attn.attn.weight", "merge.merge_g.weight"} <= names
    targets, ignore = task.sparsity_selection(ModelArguments(prune_embeddings=False))
    dense_embeddings = set(select_parameters(model, targets=targets, ignore=ignore))
    assert names - dense_embeddings == {n for n in names if "embed" in n} >= {"generate.embeddings.weight"}
