"""`SparseTrainer` is a drop-in `Trainer`: the same scenarios on both give the same events, metrics, files and weights.

Each scenario runs on a stock `Trainer` and on `SparseTrainer`, dense (no sparsity configuration) and with a real
method (`omp`, where the stock Trainer gets the same `SparsityCallback` through `attach`).
"""

import concurrent.futures
import json
import os
import shutil
from types import SimpleNamespace

import pytest
import torch
import transformers.trainer
from torch import nn
from transformers import Trainer, TrainerCallback

from smc_hf import SparseTrainer, SparsityCallback, SparsityConfig
from smc_hf.io.mask_file import MASKS_FILE
from tests.helpers import ToyClassification, tiny_roberta, training_args

OMP = SparsityConfig(method="omp", sparsity=0.5)
SETUPS = ["dense", "omp"]
TRAIN_EVAL = dict(max_steps=10, logging_steps=5, eval_strategy="steps", eval_steps=5, save_strategy="steps",
                  save_steps=5, include_num_input_tokens_seen="all")


class Recorder(TrainerCallback):
    """Every event, in order, and a copy of each log it receives."""

    def __init__(self):
        self.events, self.logs = [], []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            def record(args, state, control, **kwargs):
                self.events.append(name)
                if name == "on_log":
                    self.logs.append(dict(kwargs["logs"]))
            return record
        return super().__getattribute__(name)


def _pair(setup, out, model_fn=tiny_roberta, callbacks=(), **overrides):
    """(stock Trainer, SparseTrainer) on identical models, data and arguments."""
    made = []
    for name, cls in (("trainer", Trainer), ("sparse", SparseTrainer)):
        kwargs = dict(model=model_fn(), args=training_args(out / name, **overrides), train_dataset=ToyClassification(),
                      eval_dataset=ToyClassification(n=8, seed=1), callbacks=[cb() for cb in callbacks])
        if cls is SparseTrainer:
            trainer = SparseTrainer(sparsity_config=OMP if setup == "omp" else None, **kwargs)
        else:
            trainer = Trainer(**kwargs)
            if setup == "omp":
                SparsityCallback(OMP).attach(trainer)
        made.append(trainer)
    return made


def _recorder(trainer):
    return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, Recorder))


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same_weights(a, b):
    a, b = _weights(a), _weights(b)
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("setup", SETUPS)
def test_events_metrics_and_logs_are_the_trainers(tmp_path, setup):
    stock, sparse = _pair(setup, tmp_path, callbacks=[Recorder], **TRAIN_EVAL)
    results = [t.train() for t in (stock, sparse)]
    evaluations = [t.evaluate() for t in (stock, sparse)]
    assert _recorder(stock).events == _recorder(sparse).events
    assert _recorder(stock).events.count("on_log") == 6  # 2 train logs, 3 evaluations, the final metrics
    assert results[0].metrics.keys() == results[1].metrics.keys()
    assert {"epoch", "num_input_tokens_seen", "train_loss"} <= results[1].metrics.keys()
    assert evaluations[0].keys() == evaluations[1].keys()
    assert {"epoch", "num_input_tokens_seen", "eval_loss"} <= evaluations[1].keys()
    assert evaluations[0]["eval_loss"] == evaluations[1]["eval_loss"]
    assert not any(k.startswith("sparsity/") for k in {*results[1].metrics, *evaluations[1]})
    stock_history = [set(h) for h in stock.state.log_history]
    assert stock_history == [set(h) for h in sparse.state.log_history]
    sparse_keys = [any(k.startswith("sparsity/") for k in h) for h in sparse.state.log_history]
    assert all(sparse_keys) if setup == "omp" else not any(sparse_keys)
    assert _same_weights(stock.model, sparse.model)


@pytest.mark.parametrize("setup", SETUPS)
def test_resume_with_restored_callbacks_from_a_checkpoint_outside_output_dir(tmp_path, setup):
    overrides = dict(TRAIN_EVAL, eval_strategy="no", restore_callback_states_from_checkpoint=True)
    full = _pair(setup, tmp_path / "full", **overrides)
    for trainer in full:
        trainer.train()
    for name, expected in zip(("trainer", "sparse"), full):
        elsewhere = tmp_path / f"moved-{name}"
        shutil.copytree(tmp_path / "full" / name / "checkpoint-5", elsewhere)
    resumed = _pair(setup, tmp_path / "resumed", model_fn=lambda: tiny_roberta(seed=3), **overrides)
    for name, trainer, expected in zip(("trainer", "sparse"), resumed, full):
        if trainer.__class__ is Trainer:  # a re-created callback reads the folder here (README: stock Trainer)
            trainer.args.resume_from_checkpoint = str(tmp_path / f"moved-{name}")
        trainer.train(resume_from_checkpoint=str(tmp_path / f"moved-{name}"))
        assert _same_weights(trainer.model, expected.model), name
    if setup == "omp":
        assert isinstance(resumed[1].callback_handler.callbacks[0], SparsityCallback)
        assert resumed[1].sparsity_callback.step == 10
        assert all("sparsity/achieved" in h for h in resumed[1].state.log_history)


@pytest.mark.parametrize("setup", SETUPS)
def test_load_best_model_at_end_loads_the_same_checkpoint(tmp_path, setup):
    overrides = dict(TRAIN_EVAL, load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=False)
    stock, sparse = _pair(setup, tmp_path, **overrides)
    for trainer in (stock, sparse):
        trainer.train()
    assert os.path.basename(stock.state.best_model_checkpoint) == os.path.basename(sparse.state.best_model_checkpoint)
    assert _same_weights(stock.model, sparse.model)
    if setup == "omp":
        callback = sparse.sparsity_callback
        assert sum(callback.masks.weight_zeros().values()) == round(0.5 * callback.masks.numel())
        assert (tmp_path / "sparse" / os.path.basename(sparse.state.best_model_checkpoint) / MASKS_FILE).is_file()


@pytest.mark.parametrize("setup", SETUPS)
def test_hyperparameter_search(tmp_path, setup):
    optuna = pytest.importorskip("optuna", reason="optuna is not installed; the other hp backends (ray, wandb) neither")
    results = []
    for trainer in _pair(setup, tmp_path, max_steps=4, eval_strategy="no", save_strategy="no"):
        trainer.model_init = lambda: tiny_roberta()
        best = trainer.hyperparameter_search(
            hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)},
            backend="optuna", n_trials=2, direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0),
        )
        results.append(best)
    assert results[0].objective == pytest.approx(results[1].objective)


@pytest.mark.parametrize("setup", SETUPS)
def test_model_init_trains_a_fresh_model_per_call_and_keeps_the_default_objective(tmp_path, setup):
    """What every hyperparameter_search backend does per trial: train() re-creates the model, evaluate() scores it."""
    objectives = []
    for trainer in _pair(setup, tmp_path, max_steps=4, eval_strategy="no", save_strategy="no"):
        trainer.model_init = lambda: tiny_roberta()
        trainer.train()
        first = _weights(trainer.model)
        trainer.train()
        assert all(torch.equal(first[n], p) for n, p in trainer.model.named_parameters())
        objectives.append(transformers.trainer_utils.default_compute_objective(trainer.evaluate()))
    assert objectives[0] == pytest.approx(objectives[1])


class FakeHub:
    """Stands in for `HfApi`: records, at the moment of each upload, the files and config block it would send."""

    def __init__(self):
        self.uploads = []

    def create_repo(self, repo_id, **kwargs):
        return SimpleNamespace(repo_id=f"user/{repo_id.split('/')[-1]}")

    def upload_folder(self, folder_path, path_in_repo=None, run_as_future=False, ignore_patterns=(), **kwargs):
        files = sorted(f for f in os.listdir(folder_path) if not f.startswith(("_", "checkpoint-")))
        config = {}
        if "config.json" in files:
            with open(os.path.join(folder_path, "config.json")) as f:
                config = json.load(f)
        self.uploads.append(dict(path_in_repo=path_in_repo, files=files, sparsity="sparsity" in config))
        if not run_as_future:
            return SimpleNamespace(oid="0")
        done = concurrent.futures.Future()
        done.set_result(None)
        return done


@pytest.mark.parametrize("setup", SETUPS)
def test_push_to_hub_uploads_the_sparse_files(tmp_path, monkeypatch, setup):
    hubs = [FakeHub()]
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: hubs[-1])
    pushed = dict(max_steps=10, save_strategy="steps", save_steps=5, push_to_hub=True, hub_model_id="user/m",
                  hub_strategy="checkpoint")
    for trainer in _pair(setup, tmp_path, **pushed):
        hubs.append(FakeHub())
        trainer.train()
        trainer.push_to_hub()
    stock, sparse = hubs[1:]
    assert [u["path_in_repo"] for u in stock.uploads] == [u["path_in_repo"] for u in sparse.uploads]
    assert len(sparse.uploads) == 5  # two checkpoints (model + last-checkpoint), then push_to_hub()
    for upload in sparse.uploads:
        assert (MASKS_FILE in upload["files"]) == (setup == "omp"), upload
        assert upload["sparsity"] == (setup == "omp"), upload
    for upload in stock.uploads:  # the stock Trainer gets the masks (its push_to_hub rewrites config.json after)
        assert (MASKS_FILE in upload["files"]) == (setup == "omp"), upload
    if setup == "dense":
        assert [u["files"] for u in stock.uploads] == [u["files"] for u in sparse.uploads]


class ConvNet(nn.Module):
    """A vision model of Conv2d layers only: nothing the default selection prunes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))

    def forward(self, pixel_values, labels=None):
        logits = self.body(pixel_values).mean(dim=(2, 3))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


class ToyImages(torch.utils.data.Dataset):
    def __init__(self, n=16):
        gen = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 1, 6, 6, generator=gen), torch.randint(0, 2, (n,), generator=gen)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def test_a_conv2d_only_model_trains_dense_as_with_the_trainer(tmp_path):
    trainers = []
    for cls in (Trainer, SparseTrainer):
        args = training_args(tmp_path / cls.__name__, max_steps=4, save_strategy="steps", save_steps=4)
        trainer = cls(model=ConvNet(), args=args, train_dataset=ToyImages(), eval_dataset=ToyImages(8))
        metrics = trainer.train().metrics
        trainers.append((trainer, metrics, trainer.evaluate()))
    (stock, stock_train, stock_eval), (sparse, sparse_train, sparse_eval) = trainers
    assert _same_weights(stock.model, sparse.model)
    assert stock_train.keys() == sparse_train.keys() and stock_eval.keys() == sparse_eval.keys()
    assert sorted(os.listdir(tmp_path / "Trainer" / "checkpoint-4")) == sorted(
        os.listdir(tmp_path / "SparseTrainer" / "checkpoint-4"))
    assert sparse.sparsity_report().numel == 0
    with pytest.raises(ValueError, match="no prunable weights selected"):
        SparseTrainer(model=ConvNet(), args=training_args(tmp_path / "omp", max_steps=2), train_dataset=ToyImages(),
                      sparsity_config=OMP).train()
    conv = SparseTrainer(model=ConvNet(), args=training_args(tmp_path / "conv", max_steps=2), train_dataset=ToyImages(),
                         sparsity_config=SparsityConfig(method="omp", sparsity=0.5, targets=[r"body\.\d+\.weight"]))
    conv.train()
    assert conv.sparsity_report().achieved == pytest.approx(0.5, abs=0.01)


def test_pop_callback_leaves_a_working_trainer(tmp_path):
    stock, sparse = _pair("omp", tmp_path, **dict(TRAIN_EVAL, save_strategy="no"))
    stock.pop_callback(SparsityCallback)
    popped = sparse.pop_callback(SparsityCallback)
    assert isinstance(popped, SparsityCallback) and sparse.sparsity_callback is None
    assert stock.train().metrics.keys() == sparse.train().metrics.keys()
    assert stock.evaluate().keys() == sparse.evaluate().keys()
    assert _same_weights(stock.model, sparse.model)
    sparse.save_model()
    assert not (tmp_path / "sparse" / MASKS_FILE).exists()


class FakeIntegration(TrainerCallback):
    """Stands in for TensorBoard / W&B: the Trainer places reporting integrations before user callbacks."""

    seen: list = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        FakeIntegration.seen.append(dict(logs))


def test_reporting_integrations_see_the_sparsity_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(transformers.trainer, "get_reporting_integration_callbacks", lambda report_to: [FakeIntegration])

    def seen_by_integration(make):
        FakeIntegration.seen = []
        trainer = make(training_args(tmp_path / str(len(os.listdir(tmp_path))), **dict(TRAIN_EVAL, save_strategy="no")))
        trainer.train()
        trainer.evaluate()
        return [("sparsity/achieved" in logs) for logs in FakeIntegration.seen]

    data = dict(train_dataset=ToyClassification(), eval_dataset=ToyClassification(n=8, seed=1))
    # `callbacks=[...]` comes after the integrations: they log before the keys exist (what README says to avoid).
    late = seen_by_integration(lambda a: Trainer(model=tiny_roberta(), args=a, callbacks=[SparsityCallback(OMP)], **data))
    assert late and not any(late)

    def attached(a):
        trainer = Trainer(model=tiny_roberta(), args=a, **data)
        SparsityCallback(OMP).attach(trainer)
        return trainer

    assert all(seen_by_integration(attached))
    assert all(seen_by_integration(lambda a: SparseTrainer(model=tiny_roberta(), args=a, sparsity_config=OMP, **data)))
