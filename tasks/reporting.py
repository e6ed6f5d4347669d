"""The reported figure: the paper's best evaluation over training, with the final evaluation beside it.

`eval_*` keys are the final model's evaluation, `best_eval_*` the best checkpoint's (the one
`load_best_model_at_end` restored; `best_step` its optimizer step within the last round). The paper's
figure (`metric`) is the best one when the task selects a checkpoint (`select_best_on`), else the final one.
"""

from __future__ import annotations

from typing import Any, Optional


def evaluations_by_step(log_history: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """The `eval_*` values the Trainer logged, merged per step (one evaluation of several splits logs once per
    split)."""
    out: dict[int, dict[str, float]] = {}
    for entry in log_history:
        values = {k: v for k, v in entry.items() if k.startswith("eval_")}
        if values and "step" in entry:
            out.setdefault(int(entry["step"]), {}).update(values)
    return out


def summarise(task, trainer, evaluated: dict[str, float], eval_sets) -> dict[str, Any]:
    """`metric`, `metric_rule`, `final_metric`, `metrics` (final `eval_*`, best `best_eval_*`), `final_step`,
    `best_step`.

    `evaluated` is the evaluation of the model the trainer holds after `train()`: the best checkpoint when the
    Trainer loaded it, else the final weights; the other one comes from the logged evaluations.
    """
    args, state = trainer.args, trainer.state
    logged = evaluations_by_step(state.log_history)
    best_step: Optional[int] = state.best_global_step if args.metric_for_best_model else None
    loaded_best = bool(args.load_best_model_at_end and state.best_model_checkpoint)
    final_step: Optional[int] = state.global_step
    if loaded_best:
        best = evaluated
        final_step = max(logged) if logged else None
        final = task.complete_metrics(dict(logged[final_step]), eval_sets) if logged else {}
    else:
        final = evaluated
        best = task.complete_metrics(dict(logged[best_step]), eval_sets) if best_step in logged else None
    metrics = dict(final)
    if best is not None:
        metrics.update({f"best_{key}": value for key, value in best.items()})
    rule = "best" if best is not None else "final"
    return {
        "metric": task.primary_metric(best if best is not None else final),
        "metric_rule": rule,
        "final_metric": task.primary_metric(final) if final else None,
        "metrics": metrics,
        "final_step": final_step,
        "best_step": best_step if best is not None else None,
    }
