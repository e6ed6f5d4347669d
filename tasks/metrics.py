"""Offline metrics (no `evaluate.load`): accuracy, arithmetic answer accuracy and BLEU, in percent/BLEU points."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .prefix_expr import answer_matches, evaluate_prefix


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Percentage of exact label matches."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or labels.size == 0:
        raise ValueError(f"accuracy needs equal non-empty shapes, got {predictions.shape} and {labels.shape}")
    return float((predictions == labels).mean() * 100.0)


def answer_hits(
    expressions: Sequence[Sequence[str]], numbers: Sequence[Sequence[float]], targets: Sequence[float]
) -> int:
    """Number of predicted prefix expressions whose value, with the problem's numbers, is the target (1e-4)."""
    if not (len(expressions) == len(numbers) == len(targets)) or not targets:
        raise ValueError("answer_accuracy needs as many expressions, number lists and targets, at least one")
    return int(sum(answer_matches(evaluate_prefix(e, n), t) for e, n, t in zip(expressions, numbers, targets)))


def answer_accuracy(
    expressions: Sequence[Sequence[str]], numbers: Sequence[Sequence[float]], targets: Sequence[float]
) -> float:
    """Percentage of predicted prefix expressions whose value, with the problem's numbers, is the target (1e-4)."""
    return 100.0 * answer_hits(expressions, numbers, targets) / len(targets)


def pool_folds(counts: Iterable[tuple[int, int]]) -> float:
    """Cross-validation score as the paper computes it: total correct over total evaluated, in percent, from one
    (correct, evaluated) pair per fold; folds of different sizes weigh by their size, unlike a mean of accuracies."""
    counts = [(int(c), int(n)) for c, n in counts]
    if not counts or any(n <= 0 or not 0 <= c <= n for c, n in counts):
        raise ValueError(f"pool_folds needs at least one fold and 0 <= correct <= evaluated > 0 in each, got {counts}")
    return 100.0 * sum(c for c, _ in counts) / sum(n for _, n in counts)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, one reference per sentence)."""
    import sacrebleu

    if len(hypotheses) != len(references) or not references:
        raise ValueError("bleu needs as many hypotheses as references, at least one")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
