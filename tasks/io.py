"""Reading the authors' on-disk formats with errors that name the file, the line and the column."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

from .base import DataError


def read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, record


def field(record: dict[str, Any], column: str, where: str) -> Any:
    """`record[column]`, following dots into nested objects; a DataError naming `where` and the column if absent."""
    value: Any = record
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{where}: missing column '{column}'")
        value = value[part]
    return value


def nonempty(rows: list, source: str) -> list:
    if not rows:
        raise DataError(f"{source}: no examples (empty split)")
    return rows
