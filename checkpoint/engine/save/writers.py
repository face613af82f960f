"""Which files the job may have changed without their stat showing it, since the last sync.

Writes through a shared writable mapping (numpy.memmap, LMDB, SQLite's ``-shm``) need not
change a file's size, mtime or ctime, so the stat cache cannot see them. ``--rehash open``
reads again the files a process of the job has open or mapped for writing when a sync
starts. That alone misses a file the job mapped, wrote and unmapped between two syncs, and
every file of a job that has exited or been stopped before the final sync (its maps are
gone by then). So a :class:`WriterWatch` samples the job's writers every ``interval``
seconds while it runs and keeps every file it saw since the last sync began; the next sync
reads those again and trusts the stat of the rest. The final checkpoint after a notice
then reads what the job could have changed unseen, not the whole dir.

What a sample can miss: a file mapped, written and unmapped within one interval. Its first
write through the map sets its mtime (the kernel does so when a clean page is first
written), so the stat shows it unless the sync read the file between that first write
and a later one; a file whose mtime is that recent (:data:`..localdir.stats.RACY_SECONDS`)
is read again at the next sync anyway. ``--rehash all`` reads every file at every sync.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Inode = tuple[int, int]  # (st_dev, st_ino)

#: ``--rehash`` values: which files a sync reads again although their stat is unchanged
REHASH_MODES = ("open", "all", "never")

#: seconds between two looks at the job's open files and maps (one read of /proc/PID/fd
#: and /proc/PID/maps per process of the job: well under a millisecond for most jobs)
SAMPLE_SECONDS = 1.0


class WriterWatch:
    """The files the job's processes had open or mapped for writing since a sync began."""

    def __init__(self, writers: Callable[[], set[Inode]], interval: float = SAMPLE_SECONDS):
        self._writers = (
            writers  # the job's writers now (checkpoint.engine.save.savepoints.writable_inodes)
        )
        self._interval = interval
        self._seen: set[Inode] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Sample in a thread of its own until :meth:`stop` (the loop never waits on it)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="writer-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sample(self) -> set[Inode]:
        """The writers now, remembered for the next sync."""
        now = self._writers()
        with self._lock:
            self._seen |= now
        return now

    def begin(self) -> set[Inode]:
        """For a sync that starts now: every writer seen since the last one began, and the
        writers now. Those stay remembered: they may write again once the sync has read them."""
        now = self._writers()
        with self._lock:
            seen, self._seen = self._seen | now, set(now)
        return seen

    def failed(self, seen: set[Inode]) -> None:
        """The sync that :meth:`begin` returned ``seen`` for did not commit: keep them."""
        with self._lock:
            self._seen |= seen

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except Exception:  # /proc read in a race with an exiting process: next time
                continue
