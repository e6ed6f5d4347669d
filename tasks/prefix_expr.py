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


def is_constant(token: str) -> bool:
    """A finite decimal number written out (`3`, `0.5`, `100.0`): the only tokens besides operators and placeholders."""
    try:
        return math.isfinite(float(token)) and token.strip() == token and token.lower() not in ("inf", "nan")
    except ValueError:
        return False


def prefix_problem(tokens: Sequence[str]) -> Optional[str]:
    """Why `tokens` is not one complete prefix expression over operators, `numberK` and constants; None if it is."""
    if not tokens:
        return "empty expression"
    equation = " ".join(tokens)
    for token in tokens:
        if token not in OPERATORS and not NUMBER_TOKEN.match(token) and not is_constant(token):
            return (f"unknown token {token!r} in {equation!r} (allowed: the operators {' '.join(OPERATORS)}, "
                    f"numberK placeholders and decimal constants)")
    open_slots = 1
    for position, token in enumerate(tokens):
        if open_slots == 0:
            return (f"not a prefix expression: {equation!r} (a complete expression ends at token {position} of "
                    f"{len(tokens)}; infix like 'number0 + number1' is written '+ number0 number1')")
        open_slots += 1 if token in OPERATORS else -1
    if open_slots:
        return f"incomplete prefix expression: {equation!r} ({open_slots} operand(s) missing)"
    return None


def answer_matches(value: Optional[float], answer: float, tol: float = 1e-4) -> bool:
    """The benchmark's value accuracy: within 1e-4 of the gold answer."""
    return value is not None and abs(value - float(answer)) < tol
