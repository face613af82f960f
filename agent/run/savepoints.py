"""The job's checkpoints taken at its save points: every sync freezes the checkpoint dir
between two saves (:mod:`checkpoint.engine.save.freeze`) and uploads from the freeze while
the job goes on; the final one, once the job's processes are all gone (:meth:`job_gone`),
reads the dir in place under the save-point lock. This wraps
:class:`checkpoint.engine.checkpointer.Checkpointer` for the loop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.manifest import Manifest
from checkpoint.engine.restore.aside import set_aside
from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.freeze import Freezer, Frozen
from checkpoint.engine.save.savepoints import consistent_sync, writable_inodes
from checkpoint.engine.save.sync import SyncResult
from checkpoint.engine.save.writers import WriterWatch
from checkpoint.savelock import SaveIncomplete, between_saves

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
        self.freezer = Freezer(directory, config=ckpt.config)
        self.rehash = rehash
        self.job_pids: Callable[[], list[int]] | None = None
        self.on_frozen: Callable[[float], None] | None = None
        self.watch: WriterWatch | None = None  # under --rehash open, once the job runs
        self.on_declared: Callable[[float], None] | None = None
        #: the job has declared a state by a sync request: from then on only a request or
        #: a save point lets a sync freeze the live dir
        self.declaring = False
        #: when the newest declaration came, and when the newest freeze was taken (Unix
        #: times): a declaration no freeze has covered yet lets the next sync take the dir
        self._declared_at = 0.0
        self._frozen_at = 0.0
        #: the job's processes are all gone: the final sync reads the dir in place
        self._gone = False

    @property
    def base(self) -> Manifest | None:
        return self.ckpt.base

    def attach(
        self,
        job_pids: Callable[[], list[int]],
        on_frozen: Callable[[float], None],
        on_declared: Callable[[float], None] | None = None,
    ) -> None:
        """The job's processes (for ``--rehash open``), who to tell when a freeze is taken,
        and who to tell when a freeze covers the declarations that came up to a time
        (``request_sync()`` returns then). Under ``--rehash open``, the job's writers are
        watched from now on (:mod:`checkpoint.engine.save.writers`)."""
        self.job_pids, self.on_frozen, self.on_declared = job_pids, on_frozen, on_declared
        if self.rehash == "open" and self.watch is None:
            self.watch = WriterWatch(lambda: writable_inodes(job_pids()))
            self.watch.start()

    def restore(self) -> RestoreResult:
        """Make the dir exactly the newest checkpoint.

        What the checkpoint lacks is moved aside (:mod:`checkpoint.engine.restore.aside`). A
        save mark left by a dead saver says the dir may hold half a save: the restore
        replaces it when there is a checkpoint; when there is none, the mark stays, so that
        no freeze takes the dir (nothing is committed) until the job completes a save, and
        the job is told.
        """
        cut_off = self.freezer.cut_off()
        # A killed agent's freeze goes (room for the restore); one kept at a clean exit
        # stays for the first freeze to adopt (checkpoint.engine.save.keptarea).
        self._reset(create_lock=False, keep_mark=True)
        result = self.ckpt.restore()
        self.freezer.restored(result.files_written)
        aside = None
        if result.manifest is not None:
            aside = set_aside(self.ckpt.directory, result.manifest)
        kept = cut_off is not None and result.manifest is None
        self._reset(create_lock=True, keep_mark=kept)  # the job's lock file
        return replace(result, aside=aside, cut_off_save=cut_off, cut_off_kept=kept)

    def declared(self, at: float | None = None) -> None:
        """The job declared its state whole (the sync signal, ``request_sync()``, its exit
        with status 0): the next sync freezes the dir as it is. From the first declaration
        on, a sync freezes the live dir only if a declaration came after the last freeze
        (the job waits for that freeze: ``request_sync()`` returns once it is taken) or a
        save point ended since."""
        self.declaring = True
        # When the signal arrived (``at``, monotonic), on the freezes' clock: after the
        # job sent it. A freeze taken before this moment does not cover it, and does not
        # release ``request_sync()`` (it waits for ``declared``, not ``frozen``).
        late = time.monotonic() - at if at is not None else 0.0
        self._declared_at = time.time() - late

    def job_gone(self) -> None:
        """The job's processes are all gone (it exited, or its tree was killed, and what it
        left behind was ended): the final sync reads the dir where it is, under the
        save-point lock, instead of freezing it (:meth:`Freezer.in_place`)."""
        self._gone = True

    def sync_once(self, reason: str) -> SyncResult:
        """The final sync too reads again only the files the job wrote since the last sync
        could have changed unseen (and those whose stat changed): ``--rehash all`` reads
        every file."""
        final = reason in FINAL_REASONS
        # Decided now, frozen later: a declaration that comes in between is covered by the
        # next sync (this one commits an older freeze, or nothing).
        asked = self._declared_at > self._frozen_at
        if not self.freezer.usable and self.freezer.cut_off() is not None:
            raise SaveIncomplete("the dir holds a save cut off by a kill; no freeze can wait")
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
                declared_only=self.declaring and not asked,
                in_place=final and self._gone,
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
        """A freeze is taken (or an older one is to be committed): tell the job. A new
        freeze of the live dir taken after the newest declaration covers it and every one
        before it (the job waits in ``request_sync()`` meanwhile)."""
        new = frozen.taken > self._frozen_at
        self._frozen_at = max(self._frozen_at, frozen.taken)
        if self.on_frozen is not None:
            self.on_frozen(frozen.taken)
        declared_at = self._declared_at
        if new and self.declaring and frozen.taken >= declared_at and self.on_declared:
            self.on_declared(declared_at)

    def _reset(self, *, create_lock: bool, keep_mark: bool) -> None:
        try:
            stale = self.freezer.reset(create_lock=create_lock, keep_mark=keep_mark, keep_area=True)
        except OSError as exc:
            self.freezer.unusable()
            log.warning("freeze.unavailable", error=str(exc), action="syncing the live dir")
            return
        if stale:
            log.info("freeze.stale_removed", bytes=stale)
