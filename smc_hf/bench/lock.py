"""An exclusive lock per cell folder, so two `smc-bench` processes never write into the same cell.

`flock` locks belong to the open file, so the OS releases them when the holder dies (even by SIGKILL): a
lock left by a killed sweep never blocks the next one. Where `fcntl` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_FILE = ".smc-bench.lock"


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it and the way out."""


def acquire_lock(folder: str, what: str) -> Optional[int]:
    """Take `folder/.smc-bench.lock` exclusively; returns its file descriptor (hand it to a child process, which
    then keeps the lock until it exits too), or None where locks are unsupported. `LockHeld` if it is taken."""
    os.makedirs(folder, exist_ok=True)
    if fcntl is None:
        return None
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(
            f"{what} is being run by another smc-bench process (pid {holder}, lock {path}); wait for it to "
            "finish or stop that process (the lock is released when it exits)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_lock(fd: Optional[int]) -> None:
    if fd is not None:
        os.close(fd)


@contextmanager
def folder_lock(folder: str, what: str) -> Iterator[Optional[int]]:
    """`acquire_lock` for the length of a block."""
    fd = acquire_lock(folder, what)
    try:
        yield fd
    finally:
        release_lock(fd)
