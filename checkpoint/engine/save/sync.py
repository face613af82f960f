"""Sync a checkpoint dir to a store: walk, hash, diff, upload, commit.

The pieces live in their own modules: :mod:`..format.jobstore` (keys and the commit
protocol), :mod:`..localdir.scan` (walk, hash, stat cache), :mod:`.upload` and
:mod:`.repack`. :class:`Syncer` ties them to one checkpoint dir; it never imports restore:
:class:`checkpoint.engine.checkpointer.Checkpointer` adds restore on top and hands what a
restore placed to :meth:`Syncer.restored`.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from checkpoint._version import __version__
from checkpoint.errors import CheckpointError, CommitConflict, ManifestError
from checkpoint.protocol import progress_path

from ..budget import DEFAULT_MAX_BYTES_IN_FLIGHT
from ..format.jobstore import JobStore, utc_iso
from ..format.layout import MANIFESTS
from ..format.manifest import MAX_CHUNK_SIZE, FileEntry, HardLinkEntry, Manifest
from ..format.paged import PAGED_ABOVE
from ..gc import prune_manifests
from ..lease import SweepWatch
from ..localdir.localindex import write_index
from ..localdir.scan import NotRegularFile, StatCache, hash_file, scan, scan_frozen
from ..progress import Listener, Progress
from .known import KnownChunks
from .repack import repack_sparse
from .upload import PACK_THRESHOLD, Location, Stored, Uploader

if TYPE_CHECKING:
    from .freeze import Frozen

log = structlog.get_logger("checkpoint")

CHUNK_SIZE = 8 << 20


class FileChanged(CheckpointError):
    """A file kept changing while it was read; the sync is abandoned, not committed torn."""


class FrozenFilesChanged(FileChanged):
    """Files of a freeze were written in place after it: the freeze is not one save."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(f"{len(paths)} file(s) changed in place after the freeze: {paths[:5]}")
        self.paths = paths


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


class Syncer:
    """The save side of one checkpoint dir: what the store holds and what the dir holds."""

    def __init__(
        self,
        job: JobStore,
        directory: Path,
        *,
        attempt: int = 0,
        chunk_size: int = CHUNK_SIZE,
        progress: Listener | None = None,
        max_bytes_in_flight: int = DEFAULT_MAX_BYTES_IN_FLIGHT,
        pack_threshold: int = PACK_THRESHOLD,
        paged_above: int = PAGED_ABOVE,
    ) -> None:
        self.job = job
        #: chunk bytes held in memory by transfers at once, upload and restore each
        self.max_bytes_in_flight = max_bytes_in_flight
        self.directory = directory
        self.attempt = attempt
        self.chunk_size = chunk_size
        self.progress = progress  # sync.progress and restore.progress reports (default: log)
        self.base: Manifest | None = None  # the newest manifest this process knows
        self.pack_threshold = pack_threshold  # files smaller than this are packed; 0: none
        self.paged_above = paged_above  # manifests of more entries are paged (format 4)
        self._known = KnownChunks()  # what a sync may take as stored (.known)
        self._sweeps = SweepWatch()  # operators' forced gc/delete (checkpoint.engine.lease)
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in (0, {MAX_CHUNK_SIZE}], not {chunk_size}")
        if max_bytes_in_flight <= 0:
            raise ValueError(f"max_bytes_in_flight must be positive, not {max_bytes_in_flight}")
        self._cache = StatCache()
        self._protected: set[int] = set()  # sequences prune must leave alone
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, job.store.concurrency), thread_name_prefix="ckpt-io"
        )
        self._lock = threading.Lock()  # one sync or restore at a time

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
        if frozen is None:
            root, found, left_out = self.directory, scan(self.directory), []
        else:
            root, left_out = frozen.root, list(frozen.left_out)
            found = scan_frozen(frozen, self.directory)
        for path, why in found.skipped:
            log.warning("sync.file_skipped", path=path, why=why)
        stored = self._known.stored()
        present = stored.hashes()
        todo = sum(  # data bytes (not holes) of the files this sync will read
            min(st.st_size, st.st_blocks * 512)
            for rel, st in found.files
            if (rehash is not None and rehash(st))
            or self._cache.unchanged(rel, st, present) is None
        )
        progress = Progress("sync.progress", todo, listener=self.progress)
        uploader = Uploader(
            self.job, self._pool, stored, progress, max_bytes_in_flight=self.max_bytes_in_flight
        )
        entries: list[FileEntry] = []
        changed: list[str] = []
        moved: dict[str, Location] = {}  # chunks of sparse packs: their old places
        hashed = 0
        try:
            for rel, st in found.files:
                try:
                    entry, n = self._file_entry(rel, st, uploader, present, root, frozen, rehash)
                except FileChanged as exc:
                    if frozen is not None:  # the freeze is torn: the caller freezes again
                        changed.append(rel)
                    else:
                        left_out.append((rel, str(exc)))
                    continue
                if entry is not None:
                    entries.append(entry)
                    hashed += n
            found.files.clear()  # the stat of every file: not needed beyond this point
            if not changed:
                moved = repack_sparse(
                    entries,
                    uploader,
                    stored,
                    root,
                    self._known.packs,
                    pack_threshold=self.pack_threshold,
                    chunk_size=self.chunk_size,
                )
        finally:
            try:
                uploader.wait()
            finally:  # what did reach the store counts, even when the sync fails
                self._known.record(uploader)
        if changed:
            raise FrozenFilesChanged(changed)
        # Only now, every upload done, is it known where each chunk lies (a pack's id is
        # the hash of its bytes): the entries get their chunks' places.
        where = Stored(
            stored.blobs | (uploader.done - uploader.located.keys()),
            {**moved, **stored.packed, **uploader.located},
        )
        entries = [_located(e, where) for e in entries]
        if left_out:  # in the walk's order: sorted by name, level by level
            entries.extend(self._previous_versions(left_out))
            entries.sort(key=lambda e: e.path.split("/"))
        hardlinks = _resolvable(found.hardlinks, {e.path for e in entries})
        manifest = Manifest(
            job_id=self.job.job_id,
            sequence=(self.base.sequence if self.base else 0) + 1,
            attempt=self.attempt,
            created=utc_iso(),
            reason=reason,
            files=tuple(entries),
            dirs=tuple(found.dirs),
            links=tuple(found.links),
            progress=_read_progress(self.directory) if frozen is None else frozen.progress,
            agent_version=__version__,
            hardlinks=hardlinks,
        )
        manifest = replace(manifest, packs=self._known.packs.table(manifest))
        sequence: int | None = None
        if self.base is None or _content(manifest) != _content(self.base):
            manifest = self._commit(manifest)
            write_index(self.directory, manifest, self._cache)  # a warm restart reads nothing
            sequence = manifest.sequence
            self.base = manifest
            self._known.take_base(manifest)
        elif frozen is not None and frozen.relinked and self.base is not None:
            write_index(self.directory, self.base, self._cache)  # the freeze's links moved ctime
        return SyncResult(
            reason=reason,
            sequence=sequence,
            files=len(entries),
            bytes_total=manifest.size,
            bytes_uploaded=uploader.bytes,
            chunks_uploaded=len(uploader.done),
            bytes_hashed=hashed,
            seconds=time.monotonic() - started,
            left_out=tuple(rel for rel, _ in left_out),
            packs_uploaded=len(uploader.packs),
        )

    def _previous_versions(self, left_out: list[tuple[str, str]]) -> list[FileEntry]:
        """Files that kept changing: their last committed version stands in for them."""
        before = {f.path: f for f in self.base.files} if self.base else {}
        kept = []
        for rel, why in left_out:
            entry = before.get(rel)
            log.warning(
                "sync.file_left_out",
                path=rel,
                why=why,
                action="kept its last committed version" if entry else "not in this checkpoint",
            )
            if entry is not None:
                kept.append(entry)
        return kept

    def _file_entry(
        self,
        rel: str,
        st: os.stat_result,
        uploader: Uploader,
        present: set[str],
        root: Path,
        frozen: Frozen | None,
        rehash: Callable[[os.stat_result], bool] | None,
    ) -> tuple[FileEntry | None, int]:
        rehashed = rehash is not None and rehash(st)
        cached = None if rehashed else self._cache.unchanged(rel, st, present)
        if cached is not None:
            if frozen is not None and rel in frozen.relinked:  # the freeze's link moved ctime
                self._cache.remember(rel, frozen.relinked[rel], cached)
            return FileEntry(rel, st.st_size, st.st_mode & 0o777, st.st_mtime_ns, cached), 0
        path = root / rel
        put = uploader.pack if st.st_size < self.pack_threshold else uploader.put
        for _ in range(1 if frozen is not None else 3):  # a freeze is frozen again, not re-read
            try:
                chunks, after = hash_file(path, self.chunk_size, put)
            except FileNotFoundError:
                return None, 0  # deleted while we walked: not part of this checkpoint
            except PermissionError as exc:
                shown = self.directory / rel  # the job's file, not the freeze's link
                raise CheckpointError(f"cannot read {shown}: {exc.strerror}") from exc
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENAMETOOLONG):
                    raise
                log.warning("sync.file_skipped", path=rel, why=exc.strerror)
                return None, 0
            except NotRegularFile as exc:
                log.warning("sync.file_skipped", path=rel, why=str(exc))
                return None, 0
            if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                self._cache.remember(rel, after, chunks)
                mode = after.st_mode & 0o777
                return FileEntry(rel, after.st_size, mode, after.st_mtime_ns, chunks), after.st_size
            st = after  # changed while we read it: read it again
        raise FileChanged(
            f"{self.directory / rel} kept changing while it was read; not committing a torn copy"
        )

    def _commit(self, manifest: Manifest) -> Manifest:
        have = self.base.pages if self.base is not None else ()  # pages stored already
        gone = self._sweeps.gone(self.job, manifest.stored_blobs() | manifest.pack_ids())
        if gone is not None:  # a forced gc or delete ran: its pages may be gone too
            have = ()
        if gone:  # a forced gc or delete took objects this sync took as stored
            self._known.forget(gone)
            raise CheckpointError(
                f"not committing: {len(gone)} stored objects it names were deleted by a "
                f"forced gc or delete of the job (e.g. {sorted(gone)[0]}); the next sync "
                "uploads them again"
            )
        for _ in range(10):
            self.job.check_current(self.attempt)
            try:  # what sync commits, restore accepts: the very same check, before the commit
                committed = self.job.commit(manifest, have=have, paged_above=self.paged_above)
            except ManifestError as exc:
                why = f"not committing a checkpoint restore would refuse: {exc}"
                raise CheckpointError(why) from None
            if committed is not None:
                return committed
            # Someone else took this number. If they are newer, check_current says so next
            # time round; otherwise (a stale attempt racing us) we commit after them.
            latest = (self.job.sequences() or [manifest.sequence])[-1]
            manifest = replace(manifest, sequence=max(latest, manifest.sequence) + 1)
        raise CommitConflict(f"{self.job.folder(MANIFESTS)}: lost the commit race ten times")

    def pending_bytes(self) -> int:
        """Bytes in files that changed since the last commit (a cheap stat walk, no reads)."""
        files = scan(self.directory).files
        present = self._known.stored().hashes()
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
            for f in manifest.files:  # the index vouched for some: no second lstat
                st = stats.get(f.path) or os.lstat(dest / f.path)
                self._cache.remember(f.path, st, f.chunks)
            self._known.take_base(manifest, set(present))
            if self.attempt and files_indexed < len(manifest.files):  # else as it is
                write_index(self.directory, manifest, self._cache)  # warm restarts read none


def _located(entry: FileEntry, where: Stored) -> FileEntry:
    try:
        return replace(entry, chunks=tuple(where.locate(c) for c in entry.chunks))
    except KeyError as exc:  # a bug, never the store: say so rather than commit a guess
        raise CheckpointError(f"{entry.path}: chunk {exc} was neither uploaded nor known") from None


def _content(m: Manifest) -> Any:
    return (m.files, m.dirs, m.links, m.hardlinks, m.progress)


def _resolvable(hardlinks: list[HardLinkEntry], files: set[str]) -> tuple[HardLinkEntry, ...]:
    """Hard links whose file made it into the checkpoint (it may vanish mid-scan)."""
    for h in hardlinks:
        if h.target not in files:
            log.warning("sync.file_skipped", path=h.path, why=f"its other name {h.target} vanished")
    return tuple(h for h in hardlinks if h.target in files)


def _read_progress(directory: Path) -> dict[str, Any]:
    try:
        doc = json.loads((progress_path(directory)).read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


__all__ = ["CHUNK_SIZE", "FileChanged", "FrozenFilesChanged", "SyncResult", "Syncer"]
