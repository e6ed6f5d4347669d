"""A dense `SparseTrainer` holds the stock Trainer's callback list and raises its errors.

Code that inspects `trainer.callback_handler.callbacks` (or the `stateful_callbacks` of `trainer_state.json`)
must see no difference between a `Trainer` and a `SparseTrainer` without a pruning method; with one, the
SparsityCallback leads the list and BestAtSparsityCallback follows the Trainer's own callbacks.
"""

import json

import pytest
from transformers import Trainer

from smc_hf import SparseTrainer, SparsityCallback, SparsityConfig
from smc_hf.training.best_model import BestAtSparsityCallback
from tests.helpers import ToyClassification, tiny_roberta, training_args

DENSE_CONFIGS = {"none": None, "dense": SparsityConfig(method="dense")}


def _names(trainer):
    return [type(cb).__name__ for cb in trainer.callback_handler.callbacks]


def _both(tmp_path, sparsity_config, **overrides):
    data = dict(train_dataset=ToyClassification(), eval_dataset=ToyClassification(n=8, seed=1))
    stock = Trainer(model=tiny_roberta(), args=training_args(tmp_path / "stock", **overrides), **data)
    sparse = SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path / "sparse", **overrides),
                           sparsity_config=sparsity_config, **data)
    return stock, sparse


@pytest.mark.parametrize("config", DENSE_CONFIGS)
@pytest.mark.parametrize("tqdm", [True, False])
def test_a_dense_sparse_trainer_lists_exactly_the_trainers_callbacks(tmp_path, config, tqdm):
    stock, sparse = _both(tmp_path, DENSE_CONFIGS[config], disable_tqdm=not tqdm)
    assert _names(sparse) == _names(stock)
    # Still reachable for reports and results: the dense callback is kept, only not installed.
    assert isinstance(sparse.sparsity_callback, SparsityCallback)
    assert sparse.sparsity_config.method == "dense"
    assert sparse.sparsity_report().target == 0.0


@pytest.mark.parametrize("config", DENSE_CONFIGS)
def test_a_dense_run_writes_the_trainers_callback_states_and_reports_zero_per_module(tmp_path, config):
    stock, sparse = _both(tmp_path, DENSE_CONFIGS[config], max_steps=4, save_strategy="steps", save_steps=4)
    for trainer in (stock, sparse):
        trainer.train()
    states = [json.loads((tmp_path / name / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]
              for name in ("stock", "sparse")]
    assert states[0] == states[1]
    report = sparse.sparsity_report()
    assert report.modules and all(m.target == 0.0 and m.zeros == 0 for m in report.modules)
    assert report.target == 0.0 and report.achieved == 0.0


def test_a_pruning_method_installs_its_callbacks(tmp_path):
    stock, sparse = _both(tmp_path, SparsityConfig(method="omp", sparsity=0.5))
    assert _names(sparse) == ["SparsityCallback", *_names(stock), "BestAtSparsityCallback"]
    guard = sparse.callback_handler.callbacks[-1]
    assert isinstance(guard, BestAtSparsityCallback) and guard.sparsity is sparse.sparsity_callback


def test_a_sparsity_callback_added_to_a_dense_trainer_is_installed_with_its_guard(tmp_path):
    _, sparse = _both(tmp_path, None)
    added = SparsityCallback(SparsityConfig(method="omp", sparsity=0.5))
    sparse.add_callback(added)
    assert sparse.callback_handler.callbacks[0] is added and sparse.sparsity_callback is added
    guards = [cb for cb in sparse.callback_handler.callbacks if isinstance(cb, BestAtSparsityCallback)]
    assert len(guards) == 1 and guards[0].sparsity is added


@pytest.mark.parametrize("config", [*DENSE_CONFIGS, "omp"])
def test_resuming_from_a_missing_checkpoint_raises_the_trainers_error(tmp_path, config):
    sparsity_config = SparsityConfig(method="omp", sparsity=0.5) if config == "omp" else DENSE_CONFIGS[config]
    missing = str(tmp_path / "no-such-checkpoint")
    errors = []
    for trainer in _both(tmp_path, sparsity_config):
        with pytest.raises(Exception) as caught:
            trainer.train(resume_from_checkpoint=missing)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]
    assert missing in errors[1][1]
