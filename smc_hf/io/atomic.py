"""Atomic writes: a file appears complete under its name or not at all.

Every writer of smc_hf goes through `atomic_path`: it writes to a temporary name beside the target (same
folder, so the final `os.replace` is a rename on one file system) and renames only once the writer finished.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path to write; it replaces `path` when the block ends, and is removed if it fails.

    The temporary name carries the process id, so concurrent writers of one file never share it.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str, data: Any, **dump_kwargs) -> None:
    """`json.dump(data)` into `path` atomically; `dump_kwargs` go to `json.dump` (indent, sort_keys, ...)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, **dump_kwargs)
            f.flush()
            os.fsync(f.fileno())
