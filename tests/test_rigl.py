"""RigL: every update moves exactly the scheduled number of connections per layer, by magnitude and gradient."""

import math

import pytest
import torch

from smc_hf import SparseTrainer, SparsityConfig
from smc_hf.core.context import PruneContext
from smc_hf.methods.rigl import RigL, drop_fraction_at
from smc_hf.core.masks import unwrap_optimizer
from tests.helpers import ToyClassification, tiny_roberta, training_args


class UpdateRecorder:
    """Wraps the method's events to keep what an update saw, and the callback's step event (where the masks are
    applied) to keep what it left behind."""

    def __init__(self, callback):
        method = callback.method
        self.updates, self.initial = [], None
        self._dense = self._before = None
        begin, before, after = method.on_round_begin, method.before_optimizer_step, method.after_optimizer_step
        applied = callback.on_optimizer_step

        def on_round_begin(ctx):
            begin(ctx)
            self.initial = {n: m.clone() for n, m in ctx.masks.masks.items()}

        def before_optimizer_step(ctx):
            self._dense = {n: p.grad.detach().clone() for n, p in ctx.masks.params.items()}
            before(ctx)

        def after_optimizer_step(ctx):
            old = {n: m.clone() for n, m in ctx.masks.masks.items()}
            weights = {n: p.detach().clone() for n, p in ctx.masks.params.items()}
            self._before = (ctx.step, old, weights)
            after(ctx)

        def on_optimizer_step(args, state, control, optimizer=None, **kwargs):
            self._before = None
            applied(args, state, control, optimizer=optimizer, **kwargs)
            if self._before is None or not method.is_update(self._before[0]):
                return
            (step, old, weights), masks = self._before, callback.masks
            opt_state = unwrap_optimizer(optimizer).state
            self.updates.append(dict(
                step=step, old=old, weights=weights, dense=self._dense,
                new={n: m.clone() for n, m in masks.masks.items()},
                params={n: p.detach().clone() for n, p in masks.params.items()},
                grads={n: p.grad.detach().clone() for n, p in masks.params.items()},
                state={n: {k: v.clone() for k, v in opt_state[p].items() if torch.is_tensor(v) and v.shape == p.shape}
                       for n, p in masks.params.items()},
            ))

        method.on_round_begin = on_round_begin
        method.before_optimizer_step = before_optimizer_step
        method.after_optimizer_step = after_optimizer_step
        callback.on_optimizer_step = on_optimizer_step


def _train(tmp_path, cfg, **overrides):
    defaults = dict(max_steps=8, logging_steps=4)
    defaults.update(overrides)
    trainer = SparseTrainer(model=tiny_roberta(), args=training_args(tmp_path, **defaults),
                            train_dataset=ToyClassification(), sparsity_config=cfg)
    recorder = UpdateRecorder(trainer.sparsity_callback)
    trainer.train()
    return trainer, recorder


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    flat = scores.flatten()
    ranked = flat.sort(descending=True).values
    assert count == 0 or count == flat.numel() or ranked[count - 1] != ranked[count], "tie at the cut"
    out = torch.zeros_like(flat, dtype=torch.bool)
    out[flat.topk(count).indices] = True
    return out.view_as(scores)


@pytest.mark.parametrize("init", ["omp", "snip", "random"])
def test_every_update_moves_the_scheduled_connections_and_keeps_inactive_state_zero(tmp_path, init):
    cfg = SparsityConfig(method="rigl", sparsity=0.6, rigl_init=init, update_every=2, drop_fraction=0.5, end_step=5)
    trainer, rec = _train(tmp_path, cfg)
    assert [u["step"] for u in rec.updates] == [2, 4]  # multiples of update_every up to end_step
    total = sum(m.numel() for m in rec.initial.values())
    # a random start is uniform (each layer rounds its own count), omp and snip global
    pruned = sum(round(0.6 * m.numel()) for m in rec.initial.values()) if init == "random" else round(0.6 * total)
    assert sum(int((~m).sum()) for m in rec.initial.values()) == pruned
    for u in rec.updates:
        fraction = 0.005 + (0.5 - 0.005) * (1 + math.cos(math.pi * u["step"] / 5)) / 2
        moved = 0
        for name, old in u["old"].items():
            new = u["new"][name]
            dropped, grown = old & ~new, ~old & new
            active = int(old.sum())
            n = min(math.floor(fraction * active + 0.5), old.numel() - active)
            assert int(dropped.sum()) == int(grown.sum()) == n, name
            moved += n
            assert int(new.sum()) == int(rec.initial[name].sum())  # the layer's density never changes
            assert torch.equal(grown, _top(u["dense"][name].abs().masked_fill(old, -1.0), n)), name
            assert torch.equal(dropped, _top((-u["weights"][name].abs()).masked_fill(~old, -float("inf")), n)), name
            assert bool((u["params"][name][~new] == 0).all()) and bool((u["params"][name][grown] == 0).all())
            assert bool((u["grads"][name][~new] == 0).all())
            assert u["state"][name], "no optimizer state recorded"
            for key, value in u["state"][name].items():
                assert bool((value[~new] == 0).all()) and bool((value[grown] == 0).all()), (name, key)
        assert moved > 0
    final = trainer.sparsity_callback.masks
    assert sum(final.weight_zeros().values()) >= pruned
    assert sum(int((~m).sum()) for m in final.masks.values()) == pruned
    if init == "random":  # uniform layer densities for a random start, as the paper's Random+RigL
        assert [int((~m).sum()) for m in rec.initial.values()] == [round(0.6 * m.numel()) for m in rec.initial.values()]


def test_updates_count_optimizer_steps_under_gradient_accumulation(tmp_path):
    cfg = SparsityConfig(method="rigl", sparsity=0.5, update_every=2)
    trainer, rec = _train(tmp_path, cfg, gradient_accumulation_steps=2, per_device_train_batch_size=2)
    assert trainer.sparsity_callback.step == 8
    assert [u["step"] for u in rec.updates] == [2, 4, 6, 8]
    assert all(any(not torch.equal(u["old"][n], u["new"][n]) for n in u["old"]) for u in rec.updates)


def test_same_seed_same_run(tmp_path):
    cfg = SparsityConfig(method="rigl", sparsity=0.5, rigl_init="random", update_every=2)
    first, _ = _train(tmp_path / "a", cfg)
    second, _ = _train(tmp_path / "b", cfg)
    assert first.sparsity_callback.masks.digest() == second.sparsity_callback.masks.digest()
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), second.model.parameters()))


def test_resuming_from_a_checkpoint_between_updates_gives_the_same_run(tmp_path):
    cfg = SparsityConfig(method="rigl", sparsity=0.5, update_every=2)
    full, _ = _train(tmp_path, cfg, save_strategy="steps", save_steps=3)
    args = training_args(tmp_path, max_steps=8, logging_steps=4, save_strategy="steps", save_steps=3)
    resumed = SparseTrainer(model=tiny_roberta(seed=5), train_dataset=ToyClassification(), sparsity_config=cfg,
                            args=args)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    assert resumed.sparsity_callback.masks.digest() == full.sparsity_callback.masks.digest()
    assert all(torch.equal(p, q) for p, q in zip(full.model.parameters(), resumed.model.parameters()))


def test_bad_options_are_rejected_before_training(tmp_path):
    with pytest.raises(ValueError, match="rigl_init must be one of omp, snip, random"):
        SparsityConfig(method="rigl", sparsity=0.5, rigl_init="magnitude")
    with pytest.raises(ValueError, match="begin_step is not used"):
        SparsityConfig(method="rigl", sparsity=0.5, begin_step=0.1)
    with pytest.raises(ValueError, match="drop_fraction must be in"):
        SparsityConfig(method="rigl", sparsity=0.5, drop_fraction=1.5)
    model = tiny_roberta()
    before = [p.detach().clone() for p in model.parameters()]
    for cfg, message in [
        (SparsityConfig(method="rigl", sparsity=0.5, end_step=50), "end_step = 50 is step 50, past the end of"),
        (SparsityConfig(method="rigl", sparsity=0.5, update_every=9), "rigl would never update the mask"),
    ]:
        trainer = SparseTrainer(model=model, args=training_args(tmp_path, max_steps=8),
                                train_dataset=ToyClassification(), sparsity_config=cfg)
        with pytest.raises(ValueError, match=message):
            trainer.train()
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))


def _schedule(max_steps, **kwargs):
    method = RigL(SparsityConfig(method="rigl", sparsity=0.5, **kwargs))
    method.setup(PruneContext(model=None, masks=None, max_steps=max_steps))
    return method


def test_release_schedule_csqa_updates_to_the_last_step_with_the_cosine_floor():
    """CSQA: 3000 steps, the release's --update-frequency 500: updates at 500 ... 3000, the drop fraction cosine-
    decayed from 0.5 to the release's eta_min 0.005 over the whole run (0.467 at the first update)."""
    method = _schedule(3000, update_every=500)
    steps = method.update_steps()
    assert steps == [500, 1000, 1500, 2000, 2500, 3000] and all(method.is_update(t) for t in steps)
    assert not method.is_update(3001) and not method.is_update(250)
    fractions = [drop_fraction_at(t, method.end, 0.5, method.config.drop_fraction_min) for t in steps]
    assert fractions[-1] == pytest.approx(0.005, abs=1e-12)
    assert fractions[0] == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi / 6)) / 2)
    assert fractions[3] == pytest.approx(0.12875, abs=1e-5)  # step 2000 (the old default gave 0.015 there)
    assert _schedule(3000).update_steps() == steps  # no task value: a sixth of training, CSQA's ratio


def test_release_schedule_arithmetic_updates_every_1000_steps():
    """MAWPS fold: ~3850 problems / batch 4 x 50 epochs = 19,250 steps, --update_frequency 1000: 19 updates."""
    method = _schedule(19250, update_every=1000)
    assert method.update_steps() == list(range(1000, 19001, 1000)) and len(method.update_steps()) == 19


def test_random_start_is_uniform_unless_a_distribution_is_given():
    assert RigL(SparsityConfig(method="rigl", sparsity=0.5, rigl_init="random")).distribution == "uniform"
    assert RigL(SparsityConfig(method="rigl", sparsity=0.5, rigl_init="omp")).distribution == "global"
    cfg = SparsityConfig(method="rigl", sparsity=0.5, rigl_init="random", distribution="erk")
    assert RigL(cfg).distribution == "erk"
