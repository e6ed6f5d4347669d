"""DeepSpeed placements on the CPU, against a stand-in for the few `deepspeed` functions they call.

DeepSpeed is not installed here (and its ZeRO engine needs GPUs), so `deepspeed.comm`, `deepspeed.utils`'
safe_* helpers and `deepspeed.zero.GatheredParameters` are replaced by a small model of ZeRO's layout:
ZeRO-3 cuts each flattened weight into equal, zero-padded slices, one per rank, for the half-precision
weight (`ds_tensor`), the fp32 master and each optimizer moment; ZeRO-1/2 keep whole weights and expose the
masters through the "full" helpers. The real engine runs in tests/test_distributed_gpu.py on GPU machines.
"""

from __future__ import annotations

import contextlib
import math
import sys
import types

import pytest
import torch
from transformers import TrainerControl, TrainerState

from smc_hf import MaskSet, SparsityCallback, SparsityConfig
from smc_hf.integrations.distributed import DeepSpeedPlacement, placement_for
from tests.helpers import ShiftingSGD
from tests.helpers import ToyClassification, tiny_roberta, training_args

WORLD = 2
KEYS = ("exp_avg", "exp_avg_sq")


class FakeDeepSpeed:
    """The `deepspeed` module as seen from one rank; counts the helper calls that write."""

    def __init__(self, rank: int):
        self.rank, self.writes = rank, 0
        self.comm = types.SimpleNamespace(get_rank=lambda group=None: rank, get_world_size=lambda group=None: WORLD)
        gathered = lambda params, modifier_rank=None: contextlib.nullcontext()  # noqa: E731
        self.zero = types.SimpleNamespace(GatheredParameters=gathered)
        self.utils = types.SimpleNamespace(
            safe_get_local_fp32_param=lambda p: p.fp32,
            safe_set_local_fp32_param=lambda p, v: self._write(p.fp32, v),
            safe_get_local_optimizer_state=lambda p, k: p.moments[k],
            safe_set_local_optimizer_state=lambda p, v, k: self._write(p.moments[k], v),
            safe_get_full_fp32_param=lambda p: p.fp32.clone(),
            safe_set_full_fp32_param=lambda p, v: self._write(p.fp32, v),
            safe_get_full_optimizer_state=lambda p, k: p.moments[k].clone(),
            safe_set_full_optimizer_state=lambda p, v, k: self._write(p.moments[k], v),
        )

    def _write(self, target, value):
        assert value.shape == target.shape
        target.copy_(value)
        self.writes += 1

    def install(self, monkeypatch):
        module = types.ModuleType("deepspeed")
        module.comm, module.utils, module.zero = self.comm, self.utils, self.zero
        for name, value in (("deepspeed", module), ("deepspeed.comm", self.comm), ("deepspeed.utils", self.utils),
                            ("deepspeed.zero", self.zero)):
            monkeypatch.setitem(sys.modules, name, value)


def random_masks(masks: MaskSet, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(s, generator=gen) > 0.5 for n, s in masks.shapes.items()}


def zero3_rank(rank: int):
    """A model whose selected weights carry rank `rank`'s ZeRO-3 partitions (weights stay whole for backward)."""
    model = tiny_roberta()
    masks = MaskSet.for_model(model)
    for i, (name, param) in enumerate(masks.params.items()):
        size = math.ceil(param.numel() / WORLD)
        flat = torch.zeros(size * WORLD)
        flat[: param.numel()] = param.detach().reshape(-1)
        part = slice(rank * size, (rank + 1) * size)
        param.ds_id = i
        param.ds_tensor = flat[part].clone()
        param.fp32 = flat[part].clone() + 1.0  # distinct values, so a wrong slice shows
        param.moments = {k: torch.rand(size) + 0.5 for k in KEYS}
    return model, masks


def optimizer_with(keys=KEYS):
    """An optimizer whose state has the per-weight buffers named `keys` (DeepSpeed keys it by partition)."""
    state = {k: torch.zeros(3) for k in keys} | {"step": torch.tensor(1.0)}
    return types.SimpleNamespace(state={torch.zeros(1): state})


@pytest.mark.parametrize("rank", range(WORLD))
def test_zero3_masks_each_partition_with_its_slice_of_the_mask(monkeypatch, rank):
    fake = FakeDeepSpeed(rank)
    fake.install(monkeypatch)
    model, masks = zero3_rank(rank)
    placement = placement_for(model)
    assert isinstance(placement, DeepSpeedPlacement) and placement.stage3
    full = random_masks(masks)
    masks.update(full)
    before = {n: (p.ds_tensor.clone(), p.fp32.clone(), {k: v.clone() for k, v in p.moments.items()})
              for n, p in masks.params.items()}
    placement.attach(masks)
    masks.apply(optimizer_with())
    for name, param in masks.params.items():
        size = param.ds_tensor.numel()
        expected = torch.zeros(size * WORLD, dtype=torch.bool)
        expected[: param.numel()] = full[name].reshape(-1)
        keep = expected[rank * size : (rank + 1) * size]
        assert torch.equal(placement.local_masks(masks)[name], keep)
        lp, fp32, moments = before[name]
        assert torch.equal(param.ds_tensor, lp * keep)
        assert torch.equal(param.fp32, fp32 * keep)
        for key in KEYS:
            assert torch.equal(param.moments[key], moments[key] * keep)
    assert fake.writes == len(masks.params) * (1 + len(KEYS))


def test_zero3_slices_of_all_ranks_tile_the_mask(monkeypatch):
    cuts = []
    for rank in range(WORLD):
        FakeDeepSpeed(rank).install(monkeypatch)
        model, masks = zero3_rank(rank)
        masks.update(random_masks(masks))
        placement = placement_for(model)
        cuts.append((placement.local_masks(masks), masks))
    for name, mask in cuts[0][1].masks.items():
        joined = torch.cat([local[name] for local, _ in cuts])
        assert torch.equal(joined[: mask.numel()], mask.reshape(-1))
        assert not joined[mask.numel():].any()  # ZeRO's padding is never "kept"


def test_masters_and_moments_are_written_once_per_mask_change(monkeypatch):
    fake = FakeDeepSpeed(0)
    fake.install(monkeypatch)
    model, masks = zero3_rank(0)
    placement = placement_for(model)
    masks.update(random_masks(masks))
    placement.attach(masks)
    optimizer = optimizer_with()
    masks.apply(optimizer)
    writes = fake.writes
    for _ in range(3):
        masks.apply(optimizer)  # between changes the gradient hooks keep masters and moments at zero
    assert fake.writes == writes
    first = masks.names[0]
    masks.set(first, ~masks.masks[first])
    masks.apply(optimizer)
    assert fake.writes == 2 * writes


def test_gradient_hooks_zero_pruned_gradients_before_deepspeed_sees_them(monkeypatch):
    FakeDeepSpeed(0).install(monkeypatch)
    model, masks = zero3_rank(0)
    placement = placement_for(model)
    masks.update(random_masks(masks))
    placement.attach(masks)
    data = ToyClassification(n=4)
    batch = {k: torch.stack([data[i][k] for i in range(4)]) for k in ("input_ids", "attention_mask", "labels")}
    model(**batch).loss.backward()
    for name, mask in masks.masks.items():
        grad = masks.params[name].grad
        assert int(grad[~mask].ne(0).sum()) == 0
        assert int(grad[mask].ne(0).sum()) > 0
    placement.attach(masks)  # re-attaching (a new round) replaces the hooks instead of stacking them
    assert len(placement._hooks) == len(masks.params)


def test_zero12_writes_masters_and_moments_through_the_full_helpers(monkeypatch):
    fake = FakeDeepSpeed(0)
    fake.install(monkeypatch)
    model = tiny_roberta()
    masks = MaskSet.for_model(model)
    for param in model.parameters():
        param._hp_mapping = None
    for param in masks.params.values():
        param.fp32 = param.detach().float().clone() + 1.0
        param.moments = {k: torch.rand(param.shape) + 0.5 for k in KEYS}
    placement = placement_for(model)
    assert isinstance(placement, DeepSpeedPlacement) and not placement.stage3
    full = random_masks(masks)
    masks.update(full)
    placement.attach(masks)
    masks.apply(optimizer_with())
    for name, mask in full.items():
        param = masks.params[name]
        assert int(param.data[~mask].ne(0).sum()) == 0 and int(param.fp32[~mask].ne(0).sum()) == 0
        assert int(param.fp32[mask].eq(0).sum()) == 0
        assert all(int(param.moments[k][~mask].ne(0).sum()) == 0 for k in KEYS)
    assert sum(masks.weight_zeros().values()) == sum(int((~m).sum()) for m in full.values())
    first = masks.names[0]
    with torch.no_grad():
        masks.params[first][~full[first]] = 1.0
    with pytest.raises(RuntimeError, match="not zero in this rank's shard"):
        masks.weight_zeros()


def test_methods_that_need_dense_gradients_are_refused_under_deepspeed(tmp_path):
    model = tiny_roberta()
    for param in model.parameters():
        param._hp_mapping = None
    callback = SparsityCallback(SparsityConfig(method="rigl", sparsity=0.5))
    with pytest.raises(ValueError, match="reads dense gradients before the optimizer step"):
        callback.on_train_begin(training_args(tmp_path), TrainerState(max_steps=10), TrainerControl(), model=model)


@pytest.mark.parametrize("inner, remasked_every_step", [
    (lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1), False),
    (lambda params: ShiftingSGD(params, lr=1e-2, momentum=0.9), True),
], ids=["adamw", "shifting-sgd"])
def test_zero12_fixed_mask_reapplied_only_for_optimizers_that_move_zeros(monkeypatch, tmp_path, inner,
                                                                         remasked_every_step):
    """The Trainer's order under DeepSpeed: the engine steps inside backward (here its inner torch optimizer on
    the whole weights, behind the engine's `.optimizer` wrapper), then the callback's events run. The gradient
    hooks mask what the optimizer reads, so AdamW needs no re-masking between mask changes."""
    FakeDeepSpeed(0).install(monkeypatch)
    model = tiny_roberta()
    for param in model.parameters():
        param._hp_mapping = None
    masks = MaskSet.for_model(model)
    for param in masks.params.values():
        param.fp32 = param.detach().float().clone()
        param.moments = {k: torch.rand(param.shape) + 0.5 for k in KEYS}
    calls = []
    original = MaskSet.apply_to_weights
    monkeypatch.setattr(MaskSet, "apply_to_weights", lambda self: (calls.append(1), original(self))[1])
    inner_optimizer = inner(model.parameters())
    engine_optimizer = types.SimpleNamespace(optimizer=inner_optimizer)
    args, state, control = training_args(tmp_path), TrainerState(max_steps=10), TrainerControl()
    callback = SparsityCallback(SparsityConfig(method="omp_before", sparsity=0.5))
    callback.on_train_begin(args, state, control, model=model, optimizer=engine_optimizer)
    assert callback.masks.placement.name == "deepspeed-zero1/2"
    data = ToyClassification(n=4)
    batch = {k: torch.stack([data[i][k] for i in range(4)]) for k in ("input_ids", "attention_mask", "labels")}
    steps = 4
    for _ in range(steps):
        model(**batch).loss.backward()
        inner_optimizer.step()
        inner_optimizer.zero_grad()
        callback.on_pre_optimizer_step(args, state, control, model=model, optimizer=engine_optimizer)
        callback.on_optimizer_step(args, state, control, model=model, optimizer=engine_optimizer)
        state.global_step += 1
    assert len(calls) == 1 + (steps if remasked_every_step else 0)
    for _, param, mask in callback.masks.masked():
        assert int(param.data[~mask].ne(0).sum()) == 0
        assert int(param.data[mask].eq(0).sum()) == 0
        state_of = inner_optimizer.state[param]
        assert all(int(v[~mask].ne(0).sum()) == 0 for v in state_of.values() if torch.is_tensor(v) and v.dim())
