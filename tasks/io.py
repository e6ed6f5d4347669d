"""Reading the authors' on-disk formats with errors that name the file, the line and the column."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Iterator

from .base import DataError


def read_text(path: str) -> str:
    """The whole file as text (UTF-8, a leading byte-order mark dropped).

    A file in another encoding fails here with its name, the byte offset and the line of the first bad
    byte, instead of a bare `UnicodeDecodeError` from deep inside a reader.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}, line {line}): {err.reason}; "
                        f"re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8") from None


def text_lines(path: str) -> list[str]:
    """The file's lines (see `read_text`), line endings kept as `open` would give them."""
    return io.StringIO(read_text(path), newline=None).readlines()


def read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file."""
    for lineno, line in enumerate(text_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")
        yield lineno, record


def read_json(path: str) -> Any:
    """One JSON document (see `read_text`), a DataError naming the file and line if it is not valid JSON."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def csv_rows(path: str, delimiter: str = ",") -> csv.DictReader:
    """A `csv.DictReader` over the file's text (see `read_text`); quoted fields may span lines."""
    return csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)


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
