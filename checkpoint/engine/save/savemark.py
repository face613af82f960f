"""The job's save-point lock, as the freeze holds it: between two saves, never inside one.

The job marks its saves by holding an exclusive ``flock`` on the lock file
(``.spot-agent/save.lock``, exported as ``SPOT_AGENT_LOCK_FILE``); while it saves, the file
holds a few bytes (the saver's pid), emptied when the save is complete. So a save cut off
by a kill leaves the lock free but the file non-empty: the agent can tell a directory that
is between two saves from one that is half-way through one. A save point that ends moves
the file's mtime: the mark by which the agent tells whether the job declared a state since
the last freeze.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from checkpoint.errors import CheckpointError
from checkpoint.protocol import save_lock_path
from checkpoint.savelock import SaveIncomplete, SaveInProgress, acquire, saver


class NotDeclared(CheckpointError):
    """The job has declared its states (a sync request), and none was declared since the
    last freeze: the live dir is not one to commit."""


class SavePointLock:
    """The save-point lock of one checkpoint dir, and the mark of the last save point."""

    def __init__(self, directory: Path, *, long_save: float) -> None:
        self.path = save_lock_path(directory)
        self.long_save = long_save  # a save this long is reported
        #: the lock file's mtime at the last freeze: a save point that ends moves it
        self._mark: int | None = None

    def cut_off(self) -> str | None:
        """At agent start, before :meth:`reset`: who began a save that never ended ("" if
        unknown), else None. Nothing else runs yet, so a mark is a dead saver's."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return saver(fd)
        finally:
            os.close(fd)

    def reset(self, *, create: bool, keep_mark: bool) -> None:
        """At agent start: create the lock file (and ``.spot-agent/``) unless ``create`` is
        false; empty a killed saver's mark unless ``keep_mark``."""
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
            fd = os.open(self.path, flags, 0o600)
            try:
                if not keep_mark:
                    os.ftruncate(fd, 0)
                self._mark = os.fstat(fd).st_mtime_ns
            finally:
                os.close(fd)

    def remove(self) -> None:
        """At agent exit: the lock file goes, and ``.spot-agent/`` if nothing else is in it."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()

    @contextlib.contextmanager
    def held(
        self, wait: float, waiting: Callable[[float], None] | None, declared_only: bool
    ) -> Iterator[tuple[float, float]]:
        """Hold the lock between two saves: (Unix time it was taken, monotonic time).
        Raises :class:`SaveInProgress` (the job saves for over ``wait`` seconds),
        :class:`SaveIncomplete` (a save was cut off) or :class:`NotDeclared`
        (``declared_only``, and no save point ended since the last time it was held)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not acquire(fd, wait, waiting, long_save=self.long_save):
                raise SaveInProgress(
                    f"{self.path}: the job has been saving for over {wait:g}s; "
                    "the checkpoint waits for the next turn"
                )
            taken, t0 = time.time(), time.monotonic()
            cut_off = saver(fd)
            if cut_off is not None:
                raise SaveIncomplete(
                    f"a save (by {cut_off or 'an unknown process'}) began and never finished: "
                    "the directory may hold half of it"
                )
            mark = os.fstat(fd).st_mtime_ns
            if declared_only and mark == self._mark:
                raise NotDeclared("no save point and no sync request since the last freeze")
            self._mark = mark
            yield taken, t0
        finally:
            os.close(fd)  # releases the lock
