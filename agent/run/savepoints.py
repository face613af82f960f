"""The job's checkpoints taken at its save points: every sync freezes the checkpoint dir
between two saves (:mod:`checkpoint.engine.save.freeze`) and uploads from the freeze while
the job goes on. This wraps :class:`checkpoint.engine.checkpointer.Checkpointer` for the
loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.manifest import Manifest
from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.freeze import Freezer, Frozen
from checkpoint.engine.save.savepoints import consistent_sync, writable_inodes
from checkpoint.engine.save.sync import SyncResult
from checkpoint.engine.save.writers import WriterWatch
from checkpoint.savelock import between_saves

from .. import logs

log = logs.get_logger()

#: a sync waits this long for the job to finish a save; the final one (the job has ended
#: or been stopped, the deadline runs) only briefly, then commits the last consistent freeze
SAVE_WAIT_SECONDS = 60.0
FINAL_SAVE_WAIT_SECONDS = 2.0
FINAL_REASONS = frozenset({"exit", "interruption"})


class SavePointCheckpoints:
    """A :class:`Checkpointer` whose syncs are taken from freezes at the job's save points."""

    def __init__(self, ckpt: Checkpointer, directory: Path, rehash: str) -> None:
        self.ckpt = ckpt
        self.freezer = Freezer(directory)
        self.rehash = rehash
        self.job_pids: Callable[[], list[int]] | None = None
        self.on_frozen: Callable[[float], None] | None = None
        self.watch: WriterWatch | None = None  # under --rehash open, once the job runs

    @property
    def base(self) -> Manifest | None:
        return self.ckpt.base

    def attach(self, job_pids: Callable[[], list[int]], on_frozen: Callable[[float], None]) -> None:
        """The job's processes (for ``--rehash open``), and who to tell when a freeze is
        taken (``request_sync()`` returns then). Under ``--rehash open``, the job's writers
        are watched from now on (:mod:`checkpoint.engine.save.writers`)."""
        self.job_pids, self.on_frozen = job_pids, on_frozen
        if self.rehash == "open" and self.watch is None:
            self.watch = WriterWatch(lambda: writable_inodes(job_pids()))
            self.watch.start()

    def restore(self) -> RestoreResult:
        self._reset(create_lock=False)  # a killed agent's freeze: room for the restore
        result = self.ckpt.restore()
        self._reset(create_lock=True)  # the job's lock file, after a clean restore
        return result

    def sync_once(self, reason: str) -> SyncResult:
        """The final sync too reads again only the files the job wrote since the last sync
        could have changed unseen (and those whose stat changed): ``--rehash all`` reads
        every file."""
        final = reason in FINAL_REASONS
        seen = self.watch.begin() if self.watch is not None else set()
        try:
            return consistent_sync(
                self.ckpt,
                self.freezer,
                reason,
                wait=FINAL_SAVE_WAIT_SECONDS if final else SAVE_WAIT_SECONDS,
                rehash=self.rehash,
                pids=self.job_pids,
                on_frozen=self._frozen,
                final=final,
                seen=seen,
            )
        except BaseException:
            if self.watch is not None:  # not committed: the next sync reads them again
                self.watch.failed(seen)
            raise

    def between_saves(self, wait: float) -> AbstractContextManager[bool]:
        """While held, the job is not in the middle of a save (see ``endings``: the job is
        never SIGKILLed half-way through one)."""
        if not self.freezer.usable:
            return contextlib.nullcontext(False)
        return between_saves(self.freezer.lock_path, wait)

    def prune(self, keep: int) -> list[int]:
        return self.ckpt.prune(keep)

    def pending_bytes(self) -> int:
        return self.ckpt.pending_bytes()

    def close(self) -> None:
        """Not called when work was abandoned at a deadline: a sync may still read."""
        if self.watch is not None:
            self.watch.stop()
        self.ckpt.close()
        self.freezer.close()

    def _frozen(self, frozen: Frozen) -> None:
        if self.on_frozen is not None:
            self.on_frozen(frozen.taken)

    def _reset(self, *, create_lock: bool) -> None:
        try:
            stale = self.freezer.reset(create_lock=create_lock)
        except OSError as exc:
            self.freezer.unusable()
            log.warning("freeze.unavailable", error=str(exc), action="syncing the live dir")
            return
        if stale:
            log.info("freeze.stale_removed", bytes=stale)
