"""docs/fidelity.md cannot drift from the code: every audit row is there once with a known verdict, switch rows
name a switch, and the defaults and options its code spans state are the code's (see the file's header)."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import pathlib
import re

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import Seq2SeqTrainingArguments, TrainerControl, TrainerState

import run_glue_like
from smc_hf import SparseTrainer, SparsityConfig, prune_model
from smc_hf.bench.names import legend_names
from smc_hf.core.context import PruneContext
from smc_hf.core.masks import MaskSet
from smc_hf.methods import METHODS, build_method
from smc_hf.methods.rigl import drop_fraction_at
from tasks import TASKS, DataArguments, ModelArguments, get_task
from tasks.epoch_schedule import EpochOneCycle, one_cycle_epoch_factors
from tests.helpers import RateRecorder, ToyClassification, tiny_roberta, training_args
from tests.test_rigl import _top as top_k, _train as train_rigl

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
VERDICTS = {"same", "switch", "fix", "improvement", "unavailable", "unstated", "open"}
#: Verdicts whose row must give its reason in the switch column.
REASONED = {"improvement", "unavailable", "open"}
#: The audit's rows: A1-A14, B1-B43 and the task sections C1 ... C6.
AUDIT_ROWS = (
    [f"A{i}" for i in range(1, 15)] + [f"B{i}" for i in range(1, 44)]
    + [f"C{section}.{i}" for section, count in ((1, 9), (2, 3), (3, 4), (4, 14), (5, 11), (6, 6))
       for i in range(1, count + 1)]
)
#: Differences a switch could undo but none does yet; a new one must be added here on purpose.
MAY_BE_OPEN: set[str] = set()
SPAN = re.compile(r"`([^`]+)`")


def _rows() -> dict[str, dict[str, str]]:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"[ABC][0-9.]+", cells[0]):
            assert cells[0] not in rows, f"row {cells[0]} appears twice"
            rows[cells[0]] = dict(zip(("id", "setting", "paper", "default", "switch", "verdict"), cells))
    return rows


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip("'\"")


def _method(spec: str):
    name, _, init = spec.partition(":")
    method = METHODS.canonical(name)
    sparsity = {"dense": 0.0, "fixed": 0.0, "lth": 0.2}.get(method, 0.5)
    return build_method(SparsityConfig(method=method, sparsity=sparsity, **({"rigl_init": init} if init else {})))


def _option_names() -> set[str]:
    names = set()
    for cls in (SparsityConfig, ModelArguments, DataArguments, Seq2SeqTrainingArguments):
        for f in dataclasses.fields(cls):
            names.add(f.name)
            names.update(a.lstrip("-") for a in f.metadata.get("aliases", []))
    return names


def _check_span(span: str, column: str, options: set[str]) -> None:
    fields = {f.name: f for f in dataclasses.fields(SparsityConfig)}
    if span.startswith("--"):
        assert span.split()[0][2:] in options, f"{span!r}: no such option of run_glue_like.py"
        return
    if "=" not in span:
        return
    key, _, raw = span.partition("=")
    expected = _value(raw)
    if key.startswith("task:"):
        task_name, *path = key[5:].split(".")
        value = get_task(task_name)
        for part in path:
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        assert value == expected, f"{span}: the code has {value!r}"
    elif key in fields:
        if column == "default":
            default = SparsityConfig().__getattribute__(key) if key != "method" else "dense"
            assert default == expected, f"{span}: SparsityConfig's default is {default!r}"
    elif "." in key:
        spec, attr = key.rsplit(".", 1)
        value = getattr(_method(spec), attr)
        assert value == expected, f"{span}: {spec} has {attr} = {value!r}"
    else:
        raise AssertionError(f"{span!r} names neither a SparsityConfig field, a method attribute nor a task")


def test_every_audit_row_is_there_once_with_a_known_verdict():
    rows = _rows()
    assert sorted(rows) == sorted(AUDIT_ROWS) and len(rows) == 104
    for row in rows.values():
        assert row["verdict"] in VERDICTS, row
        assert row["verdict"] != "open" or row["id"] in MAY_BE_OPEN, f"{row['id']} may not be open"
        if row["verdict"] in REASONED:
            assert len(row["switch"]) > 20, f"{row['id']}: an {row['verdict']} row gives its reason in the switch column"
        if row["verdict"] == "switch":
            assert any(s.startswith("--") or "=" in s for s in SPAN.findall(row["switch"])), \
                f"{row['id']}: a switch row must name its switch"


@pytest.mark.parametrize("row_id", [r for r in AUDIT_ROWS])
def test_code_spans_state_the_code(row_id):
    row = _rows()[row_id]
    options = _option_names()
    for column in ("default", "switch"):
        for span in SPAN.findall(row[column]):
            _check_span(span, column, options)


def test_legends_name_the_registered_timing():
    """`obert` was plotted as "oBERT (After)" while it pruned during fine-tuning (issue 11, bug 2)."""
    for spec, legend in legend_names().items():
        timing = METHODS.get(spec.partition(":")[0]).timing
        suffix = re.search(r"\((\w+)\)$", legend)
        assert (suffix.group(1).lower() if suffix else "none") == timing, f"{spec}: {legend!r} vs timing {timing!r}"


# -- the release's fixed mask-update intervals (B11, B31, B32) ------------------------------------------------

RELEASE_INTERVALS = {"csqa": 500, "winogrande": 500, "race": None, "mawps": 1000, "asdiv-a": 1000, "svamp": 1000,
                     "hp-s": 500, "hp-s2c5": 500, "hp-s2c2": 500, "meltome": 500, "thermoprot": 500,
                     "translation-2to2": None, "translation-5to5": None, "translation-10to10": None}


def test_tasks_set_the_release_update_interval():
    assert set(RELEASE_INTERVALS) == set(TASKS)
    for name, every in RELEASE_INTERVALS.items():
        assert get_task(name).training_defaults.get("update_every") == every, name


def _parsed_sparsity(tmp_path, *argv):
    _, _, sparsity, _ = run_glue_like.parse_args(
        ["--task", "csqa", "--output_dir", str(tmp_path), "--sparsity_method", "rigl", "--sparsity", "0.5", *argv])
    return sparsity.update_every


def test_the_command_line_interval_wins_over_the_task_default(tmp_path):
    assert _parsed_sparsity(tmp_path) == 500
    assert _parsed_sparsity(tmp_path, "--sparsity_update_every", "7") == 7  # the alias the task's default must not follow
    assert _parsed_sparsity(tmp_path, "--sparsity_update_every=8") == 8
    assert _parsed_sparsity(tmp_path, "--update_every", "9") == 9
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"task": "mawps", "output_dir": str(tmp_path), "sparsity_method": "gmp",
                                  "sparsity": 0.5}))
    with pytest.raises(ValueError):  # JSON keys are field names: the alias is refused, not silently dropped
        run_glue_like.parse_args([str(config)])
    config.write_text(json.dumps({"task": "mawps", "output_dir": str(tmp_path), "method": "gmp", "sparsity": 0.5}))
    assert run_glue_like.parse_args([str(config)])[2].update_every == 1000
    config.write_text(json.dumps({"task": "mawps", "output_dir": str(tmp_path), "method": "gmp", "sparsity": 0.5,
                                  "update_every": 3}))
    assert run_glue_like.parse_args([str(config)])[2].update_every == 3


@pytest.mark.parametrize("method", ["gmp", "rigl"])
def test_a_run_shorter_than_the_release_interval_fails_naming_the_switch(method):
    model = tiny_roberta()
    ctx = PruneContext(model=model, masks=MaskSet.for_model(model), max_steps=60)
    built = build_method(SparsityConfig(method=method, sparsity=0.5, update_every=500))
    with pytest.raises(ValueError, match="--sparsity_update_every"):
        built.setup(ctx)
    build_method(SparsityConfig(method=method, sparsity=0.5, update_every=10)).setup(ctx)


# -- SNIP in train mode (B22) -----------------------------------------------------------------------------------

@pytest.mark.parametrize("train_mode", [False, True])
def test_snip_scores_in_the_mode_asked_and_restores_the_model_mode(train_mode):
    assert SparsityConfig().snip_train_mode is False
    model = tiny_roberta()
    model.eval()
    modes = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    config = SparsityConfig(method="snip", sparsity=0.5, snip_batches=2, snip_train_mode=train_mode)
    prune_model(model, config, dataloader=DataLoader(ToyClassification(n=8), batch_size=4))
    assert modes == [train_mode, train_mode] and not model.training


# -- RigL with the release's growth (B33) -----------------------------------------------------------------------

def test_release_growth_regrows_just_dropped_weights_with_their_value_and_moments(tmp_path):
    assert SparsityConfig().rigl_release_growth is False
    cfg = SparsityConfig(method="rigl", sparsity=0.6, update_every=2, end_step=5, rigl_release_growth=True)
    trainer, rec = train_rigl(tmp_path, cfg)
    assert [u["step"] for u in rec.updates] == [2, 4]
    regrown_total = 0
    for u in rec.updates:
        fraction = drop_fraction_at(u["step"], 5, 0.5, 0.005)
        for name, old in u["old"].items():
            new, weights = u["new"][name], u["weights"][name]
            n = min(math.floor(fraction * int(old.sum()) + 0.5), int(old.sum()))
            dropped = top_k((-weights.abs()).masked_fill(~old, -float("inf")), n)
            kept = old & ~dropped
            grown = top_k(u["dense"][name].abs().masked_fill(kept, -1.0), n)
            assert torch.equal(new, kept | grown), name
            assert int(new.sum()) == int(old.sum())  # the layer's density never changes
            regrown = grown & dropped
            regrown_total += int(regrown.sum())
            assert torch.equal(u["params"][name][regrown], weights[regrown]), name  # value kept
            for key, value in u["state"][name].items():
                if key == "exp_avg_sq":  # moments of a regrown weight are not reset
                    assert bool((value[regrown] != 0).all()), (name, key)
            assert bool((u["params"][name][~new] == 0).all())
    assert regrown_total > 0, "no just-dropped weight was regrown: the test shows nothing"


# -- the protein release's one-cycle schedule stepped per epoch (C5.6) ------------------------------------------

def _one_cycle_by_hand(epochs: int) -> list[float]:
    """torch's OneCycleLR formula (30% warm-up from peak/25, cosine down to peak/2.5e5) at steps 0 .. E-1."""
    warm_end, last, start, end = 0.3 * epochs - 1, epochs - 1, 1 / 25, 1 / 25 / 1e4

    def cos(a, b, pct):
        return b + (a - b) / 2 * (1 + math.cos(math.pi * pct))

    return [cos(start, 1.0, k / warm_end) if k <= warm_end else cos(1.0, end, (k - warm_end) / (last - warm_end))
            for k in range(epochs)]


def test_epoch_one_cycle_gives_each_epoch_the_release_rate(tmp_path):
    assert one_cycle_epoch_factors(4) == pytest.approx(_one_cycle_by_hand(4), rel=1e-6)
    assert one_cycle_epoch_factors(4) == pytest.approx([0.04, 0.8117, 0.2829, 4e-6], rel=1e-3)
    assert one_cycle_epoch_factors(3) == pytest.approx(_one_cycle_by_hand(3), rel=1e-6)
    task = get_task("hp-s")
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-6, num_train_epochs=4,
                                    lr_scheduler_type="cosine", warmup_steps=0.3)
    with pytest.raises(ValueError, match="--lr_scheduler_type constant --warmup_steps 0"):
        task.trainer_kwargs(None, ModelArguments(epoch_one_cycle=True), args)
    assert "callbacks" not in task.trainer_kwargs(None, ModelArguments(), args)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-6, num_train_epochs=4,
                                    lr_scheduler_type="constant", warmup_steps=0)
    (callback,) = task.trainer_kwargs(None, ModelArguments(epoch_one_cycle=True), args)["callbacks"]
    assert isinstance(callback, EpochOneCycle)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [param], "lr": 1e-6}, {"params": [], "lr": 1e-3}])
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # the constant schedule keeps initial_lr
    for epoch, factor in ((0.0, 0.04), (0.75, 0.04), (1.0, 0.8117), (2.5, 0.2829), (3.9, 4e-6)):
        callback.on_step_begin(args, TrainerState(epoch=epoch), TrainerControl(), optimizer=optimizer)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-6 * factor, 1e-3 * factor], rel=1e-3)
    with pytest.raises(ValueError, match="--epoch_one_cycle applies to the protein tasks only"):
        get_task("csqa").check_model_arguments(ModelArguments(epoch_one_cycle=True))


def test_epoch_one_cycle_sets_the_rate_each_optimizer_step_uses_in_a_trainer(tmp_path):
    """ToyClassification(n=8) at batch 4: two steps per epoch; the rate of each step is read just before it."""
    recorder = RateRecorder()
    args = training_args(tmp_path, max_steps=-1, num_train_epochs=4, lr_scheduler_type="constant", warmup_steps=0)
    trainer = SparseTrainer(model=tiny_roberta(), args=args, train_dataset=ToyClassification(n=8),
                            callbacks=[EpochOneCycle(4), recorder], sparsity_config=SparsityConfig())
    trainer.train()
    expected = [1e-3 * f for f in one_cycle_epoch_factors(4) for _ in range(2)]
    assert recorder.rates == pytest.approx(expected, rel=1e-6)
