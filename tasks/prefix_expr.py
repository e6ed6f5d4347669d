"""Prefix (Polish) equations over number placeholders: the arithmetic solvers' output language."""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

OPERATORS = ("+", "-", "*", "/", "^")
NUMBER_TOKEN = re.compile(r"^number(\d+)$")


def evaluate_prefix(tokens: Sequence[str], numbers: Sequence[float]) -> Optional[float]:
    """Value of a prefix expression, `numberK` read from `numbers`; None if malformed or undefined.

    Undefined covers division by zero, overflow, a placeholder with no number and leftover tokens:
    the benchmark scores such predictions as wrong, never as errors.
    """
    stack: list[float] = []
    try:
        for token in reversed(tokens):
            if token in OPERATORS:
                if len(stack) < 2:
                    return None
                left, right = stack.pop(), stack.pop()
                stack.append(_apply(token, left, right))
            else:
                match = NUMBER_TOKEN.match(token)
                stack.append(float(numbers[int(match.group(1))]) if match else float(token))
    except (ValueError, IndexError, ZeroDivisionError, OverflowError):
        return None
    if len(stack) != 1 or not math.isfinite(stack[0]):
        return None
    return stack[0]


def _apply(op: str, left: float, right: float) -> float:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return left / right
    if abs(right) > 64 or abs(left) > 1e6:
        raise OverflowError(f"{left} ^ {right}")
    return float(left**right)


def is_complete_prefix(tokens: Sequence[str]) -> bool:
    """Whether `tokens` is exactly one well-formed prefix expression."""
    open_slots = 1
    for token in tokens:
        if open_slots == 0:
            return False
        open_slots += 1 if token in OPERATORS else -1
    return open_slots == 0


def answer_matches(value: Optional[float], answer: float, tol: float = 1e-4) -> bool:
    """The benchmark's value accuracy: within 1e-4 of the gold answer."""
    return value is not None and abs(value - float(answer)) < tol
