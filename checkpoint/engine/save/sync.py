"""Sync a checkpoint dir to a store: walk, hash, diff, upload, commit.

The pieces live in their own modules: :mod:`..format.jobstore` (keys and the commit
protocol), :mod:`..localdir.scan` (walk, hash, stat cache), :mod:`.readpass` (one sync's
reads and uploads), :mod:`.upload` and :mod:`.repack`. :class:`Syncer` ties them to one
checkpoint dir; it never imports restore: :class:`checkpoint.engine.checkpointer.Checkpointer`
adds restore on top and hands what a restore placed to :meth:`Syncer.restored`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ..config import DEFAULTS, EngineConfig
from ..format.jobstore import JobStore
from ..format.manifest import Manifest
from ..gc import prune_manifests
from ..lease import SweepWatch
from ..localdir.localindex import write_index
from ..localdir.scan import hash_file, scan
from ..localdir.statcache import StatCache
from ..progress import Listener
from .commit import Places, assemble, commit, content, read_progress
from .known import KnownChunks
from .readpass import DirReader

if TYPE_CHECKING:
    from .freeze import Frozen

log = structlog.get_logger("checkpoint")


@dataclass(frozen=True)
class SyncResult:
    reason: str
    sequence: int | None  # None: nothing changed, nothing committed
    files: int
    bytes_total: int
    bytes_uploaded: int
    chunks_uploaded: int
    bytes_hashed: int
    seconds: float
    #: files that kept changing, committed as their last committed version (or not at all)
    left_out: tuple[str, ...] = ()
    #: set by a sync from a freeze (.savepoints): when the state was frozen (Unix time),
    #: how long the job's save-point lock was held for it, and the disk the freeze
    #: area held beyond the dir when the sync ended (released right after)
    frozen_at: float | None = None
    freeze_seconds: float | None = None
    freeze_bytes_held: int = 0
    #: packs PUT by this sync (their chunks are counted in ``chunks_uploaded``)
    packs_uploaded: int = 0


def _from_config(name: str) -> property:
    """A read-only attribute that is the field ``name`` of the instance's ``config``."""
    return property(lambda self: getattr(self.config, name), doc=f"``config.{name}``")


class Syncer:
    """The save side of one checkpoint dir: what the store holds and what the dir holds."""

    #: how the live dir is listed and a file read; a test sets its own on an instance
    #: (a listing gone stale, a file that keeps changing)
    scan = staticmethod(scan)
    hash_file = staticmethod(hash_file)
    #: the config's fields, read from it (the sync's reads take them from the config too)
    chunk_size = _from_config("chunk_size")
    max_bytes_in_flight = _from_config("max_bytes_in_flight")  # each of upload and restore
    pack_threshold = _from_config("pack_threshold")  # smaller files are packed; 0: none
    paged_above = _from_config("paged_above")  # manifests of more entries are paged

    def __init__(
        self,
        job: JobStore,
        directory: Path,
        *,
        attempt: int = 0,
        progress: Listener | None = None,
        config: EngineConfig = DEFAULTS,
    ) -> None:
        self.job = job
        self.config = config  # every tunable; EngineConfig checks each value once
        self.directory = directory
        self.attempt = attempt
        self.progress = progress  # sync.progress and restore.progress reports (default: log)
        self.base: Manifest | None = None  # the newest manifest this process knows
        self._known = KnownChunks()  # what a sync may take as stored (.known)
        self._sweeps = SweepWatch()  # operators' forced gc/delete (checkpoint.engine.lease)
        self._cache = StatCache()
        #: the sequence of the manifest the dir's index holds the rows of, as this process
        #: wrote (or found) them and the stat cache holds them since its last mark
        self._indexed: int | None = None
        self._protected: set[int] = set()  # sequences prune must leave alone
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, job.store.concurrency), thread_name_prefix="ckpt-io"
        )
        self._lock = threading.Lock()  # one sync or restore at a time

    def _write_index(self, manifest: Manifest) -> None:
        """The dir's warm-restart index for ``manifest`` (checkpoint.engine.localdir): after
        an index this process wrote (or found whole), only the rows that changed."""
        written = write_index(
            self.directory,
            manifest,
            self._cache,
            boot_id_path=self.config.boot_id_path,
            since=self._indexed,
        )
        self._indexed = manifest.sequence if written else None
        self._cache.mark()

    def close(self) -> None:
        # Never wait here: after a deadline a transfer may still hang on a dead store.
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- sync ---------------------------------------------------------------------------

    def sync_once(
        self,
        reason: str,
        *,
        frozen: Frozen | None = None,
        rehash: Callable[[os.stat_result], bool] | None = None,
    ) -> SyncResult:
        """Commit the dir as it is now, or as ``frozen`` (a freeze of it) holds it.

        ``rehash``: files for which it is true are read again even if their stat says they
        are unchanged (writes through mmap do not always show in the stat).
        """
        with self._lock:
            return self._sync(reason, frozen, rehash)

    def _sync(
        self,
        reason: str,
        frozen: Frozen | None,
        rehash: Callable[[os.stat_result], bool] | None,
    ) -> SyncResult:
        started = time.monotonic()
        dir_reader = DirReader(
            self.job,
            self.directory,
            self._pool,
            self.config,
            self._cache,
            self._known,
            self.progress,
            self.scan,
            self.hash_file,
        )
        read = dir_reader.read_and_upload(frozen, rehash)
        uploader = read.uploader
        # Only now, every upload done, is it known where each chunk lies (a pack's id is
        # the hash of its bytes): the entries get their chunks' places.
        manifest = assemble(
            self.job.job_id,
            self.base,
            read.entries,
            read.found,
            Places(read.stored, uploader, read.moved),
            read.left_out,
            attempt=self.attempt,
            reason=reason,
            progress=read_progress(self.directory) if frozen is None else frozen.progress,
            cache=self._cache,
        )
        manifest = replace(manifest, packs=self._known.packs.table(manifest))
        read.entries.clear()  # the manifest holds them now, placed: no second copy
        sequence = self._commit_if_new(manifest, frozen)
        return SyncResult(
            reason=reason,
            sequence=sequence,
            files=len(manifest.files),
            bytes_total=manifest.size,
            bytes_uploaded=uploader.bytes,
            chunks_uploaded=len(uploader.done) + len(uploader.located),
            bytes_hashed=read.hashed,
            seconds=time.monotonic() - started,
            left_out=tuple(rel for rel, _ in read.left_out),
            packs_uploaded=len(uploader.packs),
        )

    def _commit_if_new(self, manifest: Manifest, frozen: Frozen | None) -> int | None:
        """Commit ``manifest`` unless it holds what the base does; its sequence, or None."""
        if self.base is not None and content(manifest) == content(self.base):
            if frozen is not None and frozen.relinked:  # the freeze's links moved ctime
                self._write_index(self.base)
            return None
        manifest = commit(
            self.job,
            manifest,
            base=self.base,
            attempt=self.attempt,
            sweeps=self._sweeps,
            known=self._known,
            paged_above=self.paged_above,
        )
        self._write_index(manifest)  # a warm restart reads nothing
        self.base = manifest
        self._known.take_base(manifest)
        return manifest.sequence

    def pending_bytes(self) -> int:
        """Bytes in files that changed since the last commit (a cheap stat walk, no reads)."""
        files = self.scan(self.directory).files
        present = self._known.stored()
        return sum(
            st.st_size for rel, st in files if self._cache.unchanged(rel, st, present) is None
        )

    def prune(self, keep: int) -> list[int]:
        """Delete all but the ``keep`` newest manifests; ``gc`` collects their blobs later.

        When this process's restore had to pass over damaged or unreadable checkpoints, the
        one it restored and the ones it passed over are never pruned: what restore could not
        read today (a store fault, a bug) must not cost the good checkpoint behind it. Nor is
        the newest checkpoint whose manifest loads (:func:`checkpoint.engine.gc.prune_manifests`).
        """
        newest = self.base.sequence if self.base is not None else None
        return prune_manifests(self.job, keep, protected=self._protected, newest_good=newest)

    # -- after a restore ------------------------------------------------------------------

    def restored(
        self,
        manifest: Manifest | None,
        *,
        passed_over: Collection[int],
        into: Path | None,
        stats: Mapping[str, os.stat_result],
        present: Collection[str],
        files_indexed: int,
    ) -> None:
        """Take what a restore found: ``manifest`` (None: nothing to restore) went ``into``
        a dir (None: this one), after passing over the checkpoints ``passed_over``.

        Called with :attr:`_lock` held. ``stats`` are the stats the local index vouched for,
        ``present`` the chunks the restore saw in the store.
        """
        dest = into or self.directory
        if passed_over and into is None:
            self._protected.update(passed_over)
            if manifest is not None:
                self._protected.add(manifest.sequence)
        if manifest is None:
            return
        if into is None:
            self.base = manifest
        if dest == self.directory:
            self._cache.begin()  # the rows of the files restored, in the manifest's order
            try:
                for f in manifest.files:  # the index vouched for some: no second lstat
                    self._cache.remember(f, stats.get(f.path) or os.lstat(dest / f.path))
            finally:
                self._cache.take()  # what it remembered is true, if not every file
            self._known.take_base(manifest, present)
            self._indexed = None
            if self.attempt and files_indexed < len(manifest.files):  # else as it is
                self._write_index(manifest)  # warm restarts read none
            elif files_indexed == len(manifest.files):  # the index there vouched for all
                self._indexed = manifest.sequence
            self._cache.mark()


__all__ = ["SyncResult", "Syncer"]
