"""LTH: sparsity 1 - (1 - rate)^k after round k, survivors rewound bit for bit, resumable in any round."""

import os
import shutil

import pytest
import torch

from smc_hf import SparseTrainer, SparsityConfig, prune_model
from smc_hf.methods import build_method
from tests.helpers import ToyClassification, tiny_roberta, training_args


def _trainer(output_dir, cfg, model=None, **overrides):
    defaults = dict(max_steps=4, logging_steps=4)
    defaults.update(overrides)
    return SparseTrainer(model=model or tiny_roberta(), args=training_args(output_dir, **defaults),
                         train_dataset=ToyClassification(), sparsity_config=cfg)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _record_rounds(callback):
    """Per round: the trained weights it started from and the weights and masks right after it began (the
    callback's round start, where the method prunes and rewinds and the masks are applied)."""
    rounds = []
    begin, end = callback.on_train_begin, callback.on_train_end
    trained = {}

    def on_train_begin(args, state, control, model=None, **kwargs):
        before = dict(trained)
        begin(args, state, control, model=model, **kwargs)
        rounds.append(dict(round=callback.round, trained=before, weights=_snapshot(model),
                           masks={n: m.clone() for n, m in callback.masks.masks.items()}))

    def on_train_end(args, state, control, model=None, **kwargs):
        end(args, state, control, model=model, **kwargs)
        trained.clear()
        trained.update(_snapshot(model))

    callback.on_train_begin, callback.on_train_end = on_train_begin, on_train_end
    return rounds


def _global_top(trained, masks, keep):
    scores = torch.cat([trained[n].abs().masked_fill(~masks[n], -1.0).flatten() if n in masks
                        else trained[n].abs().flatten() for n in trained])
    out = torch.zeros_like(scores, dtype=torch.bool)
    out[scores.topk(keep).indices] = True
    return out


def test_each_round_prunes_rate_of_the_rest_by_magnitude_and_rewinds_to_the_start_bit_for_bit(tmp_path):
    cfg = SparsityConfig(method="lth", sparsity=1 - 0.8**3)
    model = tiny_roberta()
    start = _snapshot(model)
    trainer = _trainer(tmp_path / "out", cfg, model=model)
    rounds = _record_rounds(trainer.sparsity_callback)
    trainer.train()
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    selected = list(trainer.sparsity_callback.masks.params)
    total = sum(start[n].numel() for n in selected)
    previous = {}
    for r in rounds[1:]:
        k = r["round"]
        masks = r["masks"]
        assert sum(int((~m).sum()) for m in masks.values()) == round((1 - 0.8**k) * total)
        assert all(bool((previous[n] | ~masks[n]).all()) for n in previous)  # what was pruned stays pruned
        kept = torch.cat([masks[n].flatten() for n in selected])
        trained = {n: r["trained"][n] for n in selected}
        assert torch.equal(kept, _global_top(trained, previous, total - round((1 - 0.8**k) * total)))
        for name, value in r["weights"].items():
            expected = start[name] * masks[name] if name in masks else start[name]
            assert torch.equal(value, expected), f"round {k}: {name} is not its rewind value"
        previous = masks
    assert all((tmp_path / "out" / f"round-{k}" / "sparsity_round.json").is_file() for k in range(3))
    assert (tmp_path / "out" / "round-0" / "lth_rewind.safetensors").is_file()
    final = trainer.sparsity_callback.masks
    assert sum(final.weight_zeros().values()) == round((1 - 0.8**3) * total)


def test_late_rewinding_returns_to_the_weights_after_k_steps(tmp_path):
    cfg = SparsityConfig(method="lth", sparsity=0.2, rewind_step=2)
    trainer = _trainer(tmp_path / "out", cfg)
    method = trainer.sparsity_callback.method
    rounds = _record_rounds(trainer.sparsity_callback)
    after = method.after_optimizer_step
    at_step = {}

    def record(ctx):
        after(ctx)
        if ctx.round == 0:
            at_step[ctx.step] = _snapshot(ctx.model)
    method.after_optimizer_step = record
    trainer.train()
    rewound = rounds[1]
    assert not torch.equal(at_step[2][next(iter(rewound["masks"]))], at_step[3][next(iter(rewound["masks"]))])
    for name, value in rewound["weights"].items():
        expected = at_step[2][name] * rewound["masks"][name] if name in rewound["masks"] else at_step[2][name]
        assert torch.equal(value, expected), name


def _remove_final_outputs(out):
    for name in ("model.safetensors", "config.json", "sparsity_masks.safetensors", "training_args.bin"):
        if (out / name).exists():
            os.remove(out / name)


def test_a_run_killed_mid_round_or_between_rounds_resumes_to_the_same_ticket(tmp_path):
    cfg = SparsityConfig(method="lth", sparsity=0.36)
    out = tmp_path / "out"
    full = _trainer(out, cfg, save_strategy="steps", save_steps=2)
    full.train()
    expected, expected_masks = _snapshot(full.model), full.sparsity_callback.masks.digest()

    def resume():
        trainer = _trainer(out, cfg, model=tiny_roberta(seed=11), save_strategy="steps", save_steps=2)
        trainer.train(resume_from_checkpoint=True)
        assert trainer.sparsity_callback.masks.digest() == expected_masks
        got = _snapshot(trainer.model)
        assert all(torch.equal(expected[n], got[n]) for n in expected)

    # Killed in the middle of round 1: its checkpoint-2 survives, its end and round 2 do not.
    shutil.rmtree(out / "round-1" / "checkpoint-4")
    for name in ("sparsity_round.json", "model.safetensors", "config.json", "sparsity_masks.safetensors"):
        os.remove(out / "round-1" / name)
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        shutil.rmtree(out / checkpoint)
    _remove_final_outputs(out)
    resume()

    # Killed between rounds 1 and 2: round 1 is complete, round 2 never started.
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        shutil.rmtree(out / checkpoint)
    _remove_final_outputs(out)
    resume()


def test_targets_off_the_grid_and_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"nearest: 0\.2 \(1 rounds\), 0\.36 \(2 rounds\)"):
        SparsityConfig(method="lth", sparsity=0.3)
    with pytest.raises(ValueError, match="nearest: 0.2 \\(1 rounds\\)"):
        SparsityConfig(method="lth", sparsity=0.1)
    with pytest.raises(ValueError, match="skip_dense_phase does not apply"):
        SparsityConfig(method="lth", sparsity=0.2, skip_dense_phase=True)
    with pytest.raises(ValueError, match=r"lth_rate must be in \(0, 1\)"):
        SparsityConfig(method="lth", sparsity=0.5, lth_rate=1.0)
    paper = build_method(SparsityConfig(method="lth", sparsity=0.59))  # printed for 1 - 0.8^4 = 0.5904
    assert paper.num_rounds == 5 and paper.round_sparsity(3) == pytest.approx(0.488) and paper.round_sparsity(4) == 0.59
    assert build_method(SparsityConfig(method="lth", sparsity=0.75, lth_rate=0.5)).num_rounds == 3
    with pytest.raises(ValueError, match="needs training"):
        prune_model(tiny_roberta(), SparsityConfig(method="lth", sparsity=0.2))
    with pytest.raises(ValueError, match=r"rewind_step = 9 is past the end of round 0 \(4 optimizer steps\)"):
        _trainer(tmp_path, SparsityConfig(method="lth", sparsity=0.2, rewind_step=9)).train()


def test_without_rewinding_each_round_continues_from_the_pruned_trained_weights(tmp_path):
    """lth_rewind=False: the release's ESM-1b LTH (learning-rate rewinding only)."""
    cfg = SparsityConfig(method="lth", sparsity=1 - 0.8**2, lth_rewind=False)
    trainer = _trainer(tmp_path / "out", cfg)
    rounds = _record_rounds(trainer.sparsity_callback)
    trainer.train()
    for r in rounds[1:]:
        for name, value in r["weights"].items():
            masks = r["masks"]
            expected = r["trained"][name] * masks[name] if name in masks else r["trained"][name]
            assert torch.equal(value, expected), f"round {r['round']}: {name} is not its trained value"
    assert not (tmp_path / "out" / "round-0" / "lth_rewind.safetensors").exists()
