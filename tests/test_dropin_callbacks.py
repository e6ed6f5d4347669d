"""A dense `SparseTrainer` holds the stock Trainer's callback list and raises its errors.

Code that inspects `trainer.callback_handler.callbacks` (or the `stateful_callbacks` of `trainer_state.json`)
must see no difference between a `Trainer` and a `SparseTrainer` without a pruning method; with one, the
SparsityCallback leads the list and BestAtSparsityCallback follows the Trainer's own callbacks.
"""

import pytest
from transformers import Trainer

from smc_hf import SparseTrainer, SparsityConfig
from tests.helpers import ToyClassification, tiny_roberta, training_args

DENSE_CONFIGS = {"none": None, "dense": SparsityConfig(method="dense")}


def _both(tmp_path, sparsity_config, **overrides):
    data = dict(train_dataset=ToyClassification(), eval_dataset=ToyClassification(n=8, seed=1))
    stock = Trainer(model=tiny_roberta(), args=training_args(tmp_path / "stock", **overrides), **data)
    sparse = SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path / "sparse", **overrides),
                           sparsity_config=sparsity_config, **data)
    return stock, sparse


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
