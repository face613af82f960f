"""The save-point lock: how a job marks a save, and how the agent tells whether one is on.

A save holds an exclusive ``flock(2)`` on the lock file (``.spot-agent/save.lock``, exported
to the job as ``SPOT_AGENT_LOCK_FILE``) and, while it runs, the file holds a few bytes (the
saver's pid); the save empties it when it is whole. The lock is released when its process
dies; the bytes are not. So a free lock on a non-empty file means a save was cut off.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import CheckpointError

#: the default of ``acquire(long_save=...)``: a save that holds the lock this long is
#: reported (once per wait)
LONG_SAVE_SECONDS = 5.0


class SaveInProgress(CheckpointError):
    """The job held its save-point lock for longer than the sync may wait."""


class SaveIncomplete(CheckpointError):
    """A save began and never finished: the saver died, or the save raised."""


def begin_save(fd: int) -> None:
    """Called with the lock held: mark a save as under way."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)


def end_save(fd: int) -> None:
    """Called with the lock held, once every file of the save is written."""
    os.ftruncate(fd, 0)


def saver(fd: int) -> str | None:
    """With the lock held: who began a save that never ended ("" if unknown), else None."""
    if not os.fstat(fd).st_size:
        return None
    return os.pread(fd, 64, 0).decode(errors="replace").strip()


@contextlib.contextmanager
def between_saves(lock_path: Path, wait: float) -> Iterator[bool]:
    """Hold the save-point lock (waiting up to ``wait`` s for a save to end): no save can
    begin or be under way meanwhile. Yields whether it is held; a job that never made the
    lock file has no save points, and nothing is held then."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    try:
        yield acquire(fd, wait, None)
    finally:
        os.close(fd)  # releases the flock


def acquire(
    fd: int,
    wait: float,
    waiting: Callable[[float], None] | None,
    *,
    long_save: float | None = None,
) -> bool:
    """flock(fd, LOCK_EX) within ``wait`` seconds, polling so that the wait is bounded.

    Once the lock has been held by a save for ``long_save`` seconds (default
    :data:`LONG_SAVE_SECONDS`), ``waiting`` is called with the seconds waited (once).
    """
    report_after = LONG_SAVE_SECONDS if long_save is None else long_save
    start = time.monotonic()
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        waited = time.monotonic() - start
        if waited >= wait:
            return False
        if not told and waited >= report_after and waiting is not None:
            told = True
            waiting(waited)
        time.sleep(0.002 if waited < 0.05 else 0.01)
