"""The arithmetic solver's recipe as GTS's (C4.1, C4.6, C4.7): the BiLSTM switch, Adam with L2 decay on every
parameter at two rates, and StepLR halving the rates every 20 epochs, stepped per epoch."""

from __future__ import annotations

import pytest
import torch
from transformers import Seq2SeqTrainingArguments, TrainerControl, TrainerState

from smc_hf import SparseTrainer, SparsityConfig
from tasks import DataArguments, ModelArguments, get_task
from tasks.arithmetic import GTSAdam
from tasks.epoch_schedule import EpochStepDecay, step_epoch_factors
from tasks.gts_model import GTSSolver
from tests.helpers import RateRecorder, ToyClassification, tiny_roberta, training_args
from tests.task_fixtures import tiny_roberta_dir


@pytest.fixture(scope="module")
def mawps(tmp_path_factory):
    task = get_task("mawps")
    raw = task.load_raw(DataArguments(task="mawps", max_train_samples=40, max_eval_samples=4))
    encoder = tiny_roberta_dir(str(tmp_path_factory.mktemp("enc")), ["number0 plus number1"], head="encoder")
    return task, raw, encoder


def _args(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path), learning_rate=8e-6, weight_decay=1e-5, num_train_epochs=50,
                  lr_scheduler_type="constant", warmup_steps=0)
    return Seq2SeqTrainingArguments(**{**values, **overrides})


def test_gts_default_has_no_lstm_and_rnn_layers_restores_the_svamp_codes(mawps):
    task, raw, encoder = mawps
    model = task.load_model(ModelArguments(model_name_or_path=encoder), None, raw)
    assert isinstance(model, GTSSolver) and model.config.rnn_layers == 0 and not hasattr(model, "rnn")
    assert model.config.beam_size == 5
    lstm = task.load_model(ModelArguments(model_name_or_path=encoder, rnn_layers=2), None, raw)
    assert lstm.config.rnn_layers == 2 and lstm.rnn.num_layers == 2 and lstm.rnn.bidirectional
    with pytest.raises(ValueError, match="--rnn_layers applies to the gts decoder only"):
        task.load_model(ModelArguments(model_name_or_path=encoder, rnn_layers=2, decoder="seq"), None, raw)
    with pytest.raises(ValueError, match="--rnn_layers applies to the arithmetic tasks only"):
        get_task("csqa").check_model_arguments(ModelArguments(rnn_layers=2))


def test_gts_adam_decays_every_parameter_in_the_gradient_at_two_rates(mawps, tmp_path):
    task, raw, encoder = mawps
    model = task.load_model(ModelArguments(model_name_or_path=encoder), None, raw)
    factory, kwargs = task.trainer_kwargs(model, ModelArguments(), _args(tmp_path))["optimizer_cls_and_kwargs"]
    assert factory is GTSAdam
    optimizer = factory()(model, **kwargs)
    assert type(optimizer) is torch.optim.Adam  # L2 in the gradient (GTS), not AdamW's decoupled decay
    assert all(group["weight_decay"] == 1e-5 for group in optimizer.param_groups)
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    names = dict(model.named_parameters())
    assert set(rates) == {id(p) for p in names.values()}  # biases and norms decay too, as GTS
    for name, param in names.items():
        assert rates[id(param)] == (8e-6 if name.startswith("encoder.") else 1e-3), name
    assert "encoder.embeddings.LayerNorm.bias" in names


@pytest.mark.parametrize("given, expected", [(None, 1e-4), (1e-3, 1e-3)])
def test_the_sequence_decoder_trains_at_1e_4_unless_a_head_rate_is_given(mawps, tmp_path, given, expected):
    task, raw, encoder = mawps
    model = task.load_model(ModelArguments(model_name_or_path=encoder, decoder="seq"), None, raw)
    factory, kwargs = task.trainer_kwargs(model, ModelArguments(decoder="seq", head_learning_rate=given),
                                          _args(tmp_path))["optimizer_cls_and_kwargs"]
    rates = {group["lr"] for group in factory()(model, **kwargs).param_groups}
    assert rates == {8e-6, expected}


def test_step_lr_halves_the_rates_every_20_epochs(mawps, tmp_path):
    task, raw, encoder = mawps
    model = task.load_model(ModelArguments(model_name_or_path=encoder), None, raw)
    assert step_epoch_factors(50, 20, 0.5) == [1.0] * 20 + [0.5] * 20 + [0.25] * 10
    (callback,) = task.trainer_kwargs(model, ModelArguments(), _args(tmp_path))["callbacks"]
    assert isinstance(callback, EpochStepDecay)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [param], "lr": 8e-6}, {"params": [], "lr": 1e-3}])
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for epoch, factor in ((0.0, 1.0), (19.9, 1.0), (20.0, 0.5), (39.5, 0.5), (40.0, 0.25), (49.9, 0.25),
                          (61.0, 0.125)):  # a --max_steps run past epoch 50 keeps halving
        callback.on_step_begin(None, TrainerState(epoch=epoch), TrainerControl(), optimizer=optimizer)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([8e-6 * factor, 1e-3 * factor])
    with pytest.raises(ValueError, match="--lr_scheduler_type constant --warmup_steps 0, or --step_lr_epochs 0"):
        task.trainer_kwargs(model, ModelArguments(), _args(tmp_path, lr_scheduler_type="linear"))
    off = task.trainer_kwargs(model, ModelArguments(step_lr_epochs=0), _args(tmp_path, lr_scheduler_type="linear"))
    assert "callbacks" not in off


def test_step_decay_sets_the_rate_each_optimizer_step_uses_in_a_trainer(tmp_path):
    """ToyClassification(n=8) at batch 4: two steps per epoch; halving every epoch shows every boundary."""

    recorder = RateRecorder()
    args = training_args(tmp_path, max_steps=-1, num_train_epochs=3, lr_scheduler_type="constant", warmup_steps=0)
    trainer = SparseTrainer(model=tiny_roberta(), args=args, train_dataset=ToyClassification(n=8),
                            callbacks=[EpochStepDecay(3, 1, 0.5), recorder], sparsity_config=SparsityConfig())
    trainer.train()
    assert recorder.rates == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4], rel=1e-6)
