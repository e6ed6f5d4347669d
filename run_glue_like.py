#!/usr/bin/env python
"""Fine-tune any SMC-Bench task with any sparse method, in the style of transformers' `run_glue.py`.

    python run_glue_like.py --task csqa --model_name_or_path roberta-large \
        --sparsity_method lth --sparsity 0.59 --output_dir out/csqa-lth-0.59

Arguments: model (`tasks.ModelArguments`), data (`tasks.DataArguments`), sparsity (`smc_hf.SparsityConfig`) and
`Seq2SeqTrainingArguments`, or one JSON file holding them all. Training arguments the command leaves out take the
task's paper defaults (`training_defaults` in its module); an epoch count given drops the task's step count.
`--model_name_or_path minilm` is the real MiniLM of the `real` extra (`tasks/model_aliases.py`). The same command
runs under `accelerate launch`.

Writes `all_results.json` in `--output_dir`: task, the reported metric (accuracies in percent, BLEU) and its rule
(`best`: the paper's best evaluation over training, the checkpoint the run saved; `final`), the final metric beside
it, all evaluation metrics (`eval_*` final, `best_eval_*` best, with `final_step` and `best_step`), achieved
sparsity per module and overall, the sparsity config, checkpoint, seed and training time. A
multi-round method (LTH) also writes one per round but the last, in `round-K/`, when that round ends.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Any, Collection, Optional

from transformers import HfArgumentParser, Seq2SeqTrainingArguments, TrainerCallback, set_seed

from smc_hf import SparseSeq2SeqTrainer, SparseTrainer, SparsityConfig
from smc_hf.io.atomic import write_json
from tasks import DataArguments, ModelArguments, get_task
from tasks.model_aliases import resolve_model_alias
from tasks.reporting import summarise

logger = logging.getLogger("run_glue_like")

PARSED = (ModelArguments, DataArguments, SparsityConfig, Seq2SeqTrainingArguments)


def resume_target(value: Optional[str], output_dir: str):
    """`--resume_from_checkpoint`: a path as given; "True" resumes only if `output_dir` holds a checkpoint
    (or a finished round), so a sweep can pass it to every rerun, interrupted or never started."""
    if value is None or value.lower() in ("false", "none", ""):
        return None
    if value.lower() != "true":
        return value
    entries = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    return True if any(e.startswith(("checkpoint-", "round-")) for e in entries) else None


#: The default every option gets in the probe parser: whatever still holds it after parsing was not given.
_UNSET = object()


def given_options(argv: list[str]) -> dict[str, Any]:
    """The options `argv` sets, by field name, whatever the spelling: `--a_b v`, `--a-b v`, `--a_b=v`, `--no_x`."""
    probe = HfArgumentParser(PARSED, add_help=False)
    probe.set_defaults(**{f.name: _UNSET for cls in PARSED for f in dataclasses.fields(cls)})
    namespace, _ = probe.parse_known_args(args=argv)
    return {key: value for key, value in vars(namespace).items() if value is not _UNSET}


def task_defaults(task_name: str, given: Collection[str]) -> dict[str, Any]:
    """The task's paper hyper-parameters for the options the user did not give.

    An epoch count the user gives drops the task's `max_steps` (which would otherwise override it)."""
    defaults = get_task(task_name).default_training_arguments(given=given)
    if "num_train_epochs" in given:
        defaults.pop("max_steps", None)
    return defaults


def parse_args(argv: list[str]):
    """The four argument dataclasses. The task's training defaults are parser defaults, so anything the user
    gives wins (any spelling, or a key of a JSON file given as the only argument); a model alias such as
    `minilm` becomes its installed folder (`tasks.model_aliases`)."""
    parser = HfArgumentParser(PARSED)
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0], encoding="utf-8") as handle:
            values = json.load(handle)
        if "task" not in values:
            raise ValueError(f"{argv[0]}: no 'task' key (one of the names in tasks.TASKS)")
        parsed = parser.parse_dict({**task_defaults(values["task"], values), **values})
    else:
        given = given_options(argv)
        parser.set_defaults(**task_defaults(given["task"], given))
        parsed = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    model_args = parsed[0]
    model_args.model_name_or_path = resolve_model_alias(model_args.model_name_or_path)
    model_args.tokenizer_name = resolve_model_alias(model_args.tokenizer_name)
    return parsed


def collect_results(trainer, task, eval_sets, model_args, train_runtime: float) -> dict[str, Any]:
    """Evaluate the trainer's model now and gather what `all_results.json` holds (the task's reporting rule)."""
    reported = summarise(task, trainer, task.evaluate(trainer, eval_sets), eval_sets)
    return {
        "task": task.name,
        "metric_name": task.metric_name,
        **reported,
        "sparsity": trainer.sparsity_report().to_dict(),
        "sparsity_config": dataclasses.asdict(trainer.sparsity_config),
        "model_name_or_path": task.checkpoint(model_args),
        "seed": trainer.args.seed,
        "train_runtime": train_runtime,
    }


class RoundResults(TrainerCallback):
    """Multi-round methods: each round but the last is evaluated when it ends and recorded in its own folder
    (`round-K/all_results.json`, with `round`), so `smc-bench` reads every LTH ticket from one run."""

    def __init__(self, trainer, task, eval_sets, model_args):
        self.trainer, self.task, self.eval_sets, self.model_args = trainer, task, eval_sets, model_args

    def on_train_end(self, args, state, control, **kwargs):
        callback = self.trainer.sparsity_callback
        if callback.round >= callback.method.num_rounds - 1:
            return  # the last round's results are main()'s, after the model is saved
        runtime = next((float(log["train_runtime"]) for log in reversed(state.log_history) if "train_runtime" in log), 0.0)
        results = {**collect_results(self.trainer, self.task, self.eval_sets, self.model_args, runtime),
                   "round": callback.round}
        if self.trainer.is_world_process_zero():
            os.makedirs(args.output_dir, exist_ok=True)
            write_json(os.path.join(args.output_dir, "all_results.json"), results, indent=2)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    model_args, data_args, sparsity, training_args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(training_args.seed)
    task = get_task(data_args.task)
    task.check_model_arguments(model_args)

    raw = task.load_raw(data_args, model_args.cache_dir)
    tokenizer = task.load_tokenizer(model_args)
    model = task.load_model(model_args, tokenizer, raw)
    # Every task head averages its own loss and ignores the token count the Trainer would pass; saying so
    # keeps the Trainer from rescaling the loss by the number of processes under DDP.
    model.accepts_loss_kwargs = False
    selection = task.sparsity_selection(model_args)
    if selection is not None and not sparsity.targets and getattr(sparsity, "selection", "default") == "default":
        sparsity = dataclasses.replace(sparsity, targets=selection[0], ignore=(sparsity.ignore or []) + selection[1])
    processed = task.preprocess(raw, tokenizer, data_args, model)
    if "train" not in processed:
        raise ValueError(f"{task.name}: no training split (pass --train_file, --data_dir or --dataset_name)")
    task.check_inputs(processed["train"], tokenizer)
    eval_sets = {split: data for split, data in processed.items() if split != "train"}
    if not eval_sets:
        raise ValueError(f"{task.name}: no evaluation split (pass --validation_file, --data_dir or --dataset_name)")
    logger.info("task %s: train %d, eval %s", task.name, len(processed["train"]),
                {k: len(v) for k, v in eval_sets.items()})

    trainer_cls = SparseSeq2SeqTrainer if task.seq2seq else SparseTrainer
    in_loop_eval = eval_sets["validation"] if list(eval_sets) == ["validation"] else eval_sets
    trainer = trainer_cls(
        model=model,
        args=training_args,
        sparsity_config=sparsity,
        train_dataset=processed["train"],
        eval_dataset=in_loop_eval if training_args.eval_strategy != "no" else None,
        data_collator=task.data_collator(tokenizer, model),
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics(tokenizer, raw.get("validation"), model),
        **task.trainer_kwargs(model, model_args, training_args),
    )
    trainer.add_callback(RoundResults(trainer, task, eval_sets, model_args))
    resume = resume_target(training_args.resume_from_checkpoint, training_args.output_dir)
    train_output = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.save_state()  # trainer_state.json: every logged evaluation, the best step and checkpoint
    results = collect_results(trainer, task, eval_sets, model_args, float(train_output.metrics.get("train_runtime", 0.0)))
    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        write_json(os.path.join(training_args.output_dir, "all_results.json"), results, indent=2)
        record = task.data_record()
        if record is not None:
            with open(os.path.join(training_args.output_dir, "data_splits.json"), "w", encoding="utf-8") as handle:
                json.dump(record, handle)
        print(summary(results, training_args.output_dir), flush=True)
    return results


def summary(results: dict[str, Any], output_dir: str) -> str:
    """A few lines for the person who ran the command: the metric, target against achieved sparsity, the files."""
    sparsity, config = results["sparsity"], results["sparsity_config"]
    target = "-" if sparsity["target"] is None else f"{sparsity['target']:.3f}"
    wanted = ("all_results.json", "model.safetensors", "sparsity_masks.safetensors", "config.json", "data_splits.json")
    files = [name for name in wanted if os.path.isfile(os.path.join(output_dir, name))]
    rule = ""
    if results.get("metric_rule") == "best":
        final = results.get("final_metric")
        rule = f"best, at step {results.get('best_step')}" + ("" if final is None else f"; final {final:.2f}") + ", "
    return "\n".join([
        f"== {results['task']}: {results['metric_name']} {results['metric']:.2f} "
        f"({rule}trained in {results['train_runtime']:.1f} s, seed {results['seed']})",
        f"   sparsity ({config.get('method')}): target {target}, achieved {sparsity['achieved']:.3f} "
        f"({sparsity['zeros']:,} of {sparsity['selected_numel']:,} selected weights are zero)",
        f"   files in {output_dir}: {', '.join(files)}",
    ])


if __name__ == "__main__":
    main()
