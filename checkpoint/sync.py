"""Sync a checkpoint dir to a store, and restore it: walk, hash, diff, upload, commit.

Layout of one job under the store's root::

    <job-id>/blobs/<h[:2]>/<h>         chunk contents, named by their sha256 (immutable)
    <job-id>/manifests/<seq>.json      one per committed checkpoint (10-digit sequence)
    <job-id>/attempts/<n>.json         one per agent start: the fencing token

The commit protocol (guarantees 1, 3, 4 and 6 of DESIGN.md):

1. every chunk the new manifest names is uploaded first (only chunks the store does not
   have: the previous manifest's and this session's uploads are known);
2. the manifest is created with put-if-absent under the next sequence number; that single
   object creation is the commit. A crash before it leaves only unreferenced blobs, which
   ``gc`` collects later; it never changes what a restore sees.
3. before committing, an attempt checks that no newer attempt of the job has started; a
   stale attempt is told (:class:`Superseded`) and stops committing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ._version import __version__
from .errors import (
    CheckpointDamaged,
    CheckpointError,
    CommitConflict,
    ConditionalWritesUnsupported,
    LocalWriteError,
    ManifestError,
    ObjectNotFound,
    StoreError,
    Superseded,
)
from .manifest import (
    RESERVED_DIR,
    TEMP_SUFFIX,
    Chunk,
    FileEntry,
    LinkEntry,
    Manifest,
    check_link_target,
)
from .store import Store

if TYPE_CHECKING:
    from .freeze import Frozen

log = structlog.get_logger("checkpoint")

CHUNK_SIZE = 8 << 20
#: A file whose mtime is this recent is hashed again next time even if it looks unchanged:
#: a second write within the filesystem's timestamp granularity would otherwise be missed.
RACY_SECONDS = 2.0
PROGRESS_FILE = "progress.json"
#: A blob this process uploaded is trusted to still be in the store for this long, even if
#: no committed manifest references it yet (a sync that failed or was overtaken). ``gc``
#: deletes only blobs older than its --min-age (24 h by default), far beyond this.
UPLOAD_TRUST_SECONDS = 3600.0
#: A chunk whose download fails or does not match its hash is fetched this many times.
FETCH_ATTEMPTS = 3


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
    #: set by a sync from a freeze (checkpoint.savepoints): when the state was frozen (Unix
    #: time), how long the job's save-point lock was held for it, and the disk the freeze
    #: area held beyond the dir when the sync ended (released right after)
    frozen_at: float | None = None
    freeze_seconds: float | None = None
    freeze_bytes_held: int = 0


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest | None
    files_written: int = 0
    files_kept: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    skipped: tuple[tuple[int, str], ...] = ()  # damaged checkpoints passed over
    extra_files: int = 0  # files in the dir that the checkpoint does not have


@dataclass
class _CacheEntry:
    key: tuple[int, int, int, int]  # size, mtime, ctime, inode: any change means "read again"
    chunks: tuple[Chunk, ...]


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    # ctime too: `cp -p`, `touch -r` or os.utime can give rewritten bytes their old mtime.
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass
class _Scan:
    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    links: list[LinkEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def utc_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobStore:
    """The keys and commit protocol of one job inside a store."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.prefix = f"{job_id}/"
        self._warned_unconditional = False

    def blob_key(self, sha256: str) -> str:
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256}"

    def manifest_key(self, sequence: int) -> str:
        return f"{self.prefix}manifests/{sequence:010d}.json"

    def attempt_key(self, attempt: int) -> str:
        return f"{self.prefix}attempts/{attempt:06d}.json"

    def _numbers(self, folder: str, suffix: str = ".json") -> list[int]:
        found = []
        for obj in self.store.list_objects(f"{self.prefix}{folder}/"):
            name = obj.key.rsplit("/", 1)[-1]
            stem = name[: -len(suffix)] if name.endswith(suffix) else ""
            if stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def sequences(self) -> list[int]:
        """Committed sequence numbers, oldest first."""
        return self._numbers("manifests")

    def load_manifest(self, sequence: int) -> Manifest:
        key = self.manifest_key(sequence)
        manifest = Manifest.from_json(self.store.get_object(key), where=key)
        if manifest.sequence != sequence:
            raise ManifestError(f"{key}: says it is sequence {manifest.sequence}")
        return manifest

    def attempts(self) -> list[int]:
        return self._numbers("attempts")

    def claim_attempt(self, info: dict[str, Any]) -> int:
        """Register a new attempt; its number fences off every older attempt."""
        attempt = (self.attempts() or [0])[-1] + 1
        for _ in range(100):
            body = json.dumps({**info, "attempt": attempt, "started": utc_iso()}).encode()
            if self._create(self.attempt_key(attempt), body):
                return attempt
            attempt += 1
        raise CommitConflict(f"{self.prefix}attempts/: could not claim an attempt number")

    def check_current(self, attempt: int) -> None:
        if attempt and self.store.exists(self.attempt_key(attempt + 1)):
            raise Superseded(attempt, max(self.attempts()))

    def commit(self, manifest: Manifest) -> bool:
        return self._create(self.manifest_key(manifest.sequence), manifest.to_json())

    def _create(self, key: str, body: bytes) -> bool:
        """Put-if-absent that tells a lost race from our own retried write.

        When a first PUT succeeds but its response is lost, the SDK retries and the retry is
        refused (412): the object is ours all the same. Bodies are unique (sequence, time),
        so equal bytes mean we wrote it.
        """
        try:
            if self.store.put_object_if_absent(key, body):
                return True
        except ConditionalWritesUnsupported as exc:
            return self._create_fenced(key, body, exc)
        try:
            return self.store.get_object(key) == body
        except ObjectNotFound:
            return False

    def _create_fenced(self, key: str, body: bytes, why: ConditionalWritesUnsupported) -> bool:
        """Fallback for stores without create-only writes: look, write, read back.

        Not atomic on its own. What makes it safe is the attempt fence: only the newest
        attempt commits (``check_current`` runs right before), and one attempt never writes
        a sequence number twice. Two agents of the *same* attempt racing inside this window
        is the one case it cannot rule out; the read-back tells the loser it lost.
        """
        if not self._warned_unconditional:
            self._warned_unconditional = True
            log.warning(
                "store.no_conditional_writes",
                store=self.store.uri,
                error=str(why),
                fallback="check, write, read back; attempts fence each other",
            )
        if self.store.exists(key):
            return False
        self.store.put_object(key, body)
        return self.store.get_object(key) == body


class Checkpointer:
    """Keeps one checkpoint dir and one job's checkpoints in step."""

    def __init__(
        self,
        job: JobStore,
        directory: Path,
        *,
        attempt: int = 0,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.job = job
        self.directory = directory
        self.attempt = attempt
        self.chunk_size = chunk_size
        self.base: Manifest | None = None  # the newest manifest this process knows
        self._known: set[str] = set()  # blobs the base manifest references
        self._uploaded: dict[str, float] = {}  # blob -> monotonic time this process put it
        self._cache: dict[str, _CacheEntry] = {}
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
        frozen: Frozen | None = None,
        rehash: Callable[[os.stat_result], bool] | None = None,
    ) -> SyncResult:
        started = time.monotonic()
        if frozen is None:
            root, scan, left_out = self.directory, _scan(self.directory), []
        else:
            root, left_out = frozen.root, list(frozen.left_out)
            scan = _Scan(list(frozen.files), list(frozen.dirs), list(frozen.links))
            scan.skipped = list(frozen.skipped)
        for path, why in scan.skipped:
            log.warning("sync.file_skipped", path=path, why=why)
        present = self._present()
        uploader = _Uploader(self.job, self._pool, present)
        entries: list[FileEntry] = []
        changed: list[str] = []
        hashed = 0
        try:
            for rel, st in scan.files:
                try:
                    entry, n = self._file_entry(rel, st, uploader, present, root, frozen, rehash)
                except FileChanged as exc:
                    if frozen is not None:  # the freeze is torn: the caller freezes again
                        changed.append(rel)
                        continue
                    left_out.append((rel, str(exc)))
                    continue
                if entry is not None:
                    entries.append(entry)
                    hashed += n
        finally:
            try:
                uploader.wait()
            finally:  # what did reach the store counts, even when the sync fails
                self._uploaded.update(dict.fromkeys(uploader.done, time.monotonic()))
        if changed:
            raise FrozenFilesChanged(changed)
        if left_out:  # in the walk's order: sorted by name, level by level
            entries.extend(self._previous_versions(left_out))
            entries.sort(key=lambda e: e.path.split("/"))
        manifest = Manifest(
            job_id=self.job.job_id,
            sequence=(self.base.sequence if self.base else 0) + 1,
            attempt=self.attempt,
            created=utc_iso(),
            reason=reason,
            files=tuple(entries),
            dirs=tuple(scan.dirs),
            links=tuple(scan.links),
            progress=_read_progress(self.directory) if frozen is None else frozen.progress,
            agent_version=__version__,
        )
        sequence: int | None = None
        if self.base is None or _content(manifest) != _content(self.base):
            manifest = self._commit(manifest)
            sequence = manifest.sequence
            self.base = manifest
            # Only blobs a committed manifest references are safe to skip later: ``gc`` may
            # collect anything else (an upload of a failed sync) once it is old enough.
            self._known = manifest.blob_hashes()
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
        uploader: _Uploader,
        present: set[str],
        root: Path,
        frozen: Frozen | None = None,
        rehash: Callable[[os.stat_result], bool] | None = None,
    ) -> tuple[FileEntry | None, int]:
        cached = None if rehash is not None and rehash(st) else self._unchanged(rel, st, present)
        if cached is not None:
            if frozen is not None and rel in frozen.relinked:  # the freeze's link moved ctime
                self._remember(rel, frozen.relinked[rel], cached)
            return FileEntry(rel, st.st_size, st.st_mode & 0o777, st.st_mtime_ns, cached), 0
        path = root / rel
        for _ in range(1 if frozen is not None else 3):  # a freeze is not read again: frozen again
            try:
                chunks, after = _hash_file(path, self.chunk_size, uploader)
            except FileNotFoundError:
                return None, 0  # deleted while we walked: not part of this checkpoint
            except PermissionError as exc:
                shown = self.directory / rel  # the job's file, not the freeze's link
                raise CheckpointError(f"cannot read {shown}: {exc.strerror}") from exc
            if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                self._remember(rel, after, chunks)
                mode = after.st_mode & 0o777
                return FileEntry(rel, after.st_size, mode, after.st_mtime_ns, chunks), after.st_size
            st = after  # changed while we read it: read it again
        raise FileChanged(
            f"{self.directory / rel} kept changing while it was read; not committing a torn copy"
        )

    def _remember(self, rel: str, st: os.stat_result, chunks: tuple[Chunk, ...]) -> None:
        if time.time_ns() - st.st_mtime_ns > RACY_SECONDS * 1e9:
            self._cache[rel] = _CacheEntry(_stat_key(st), chunks)
        else:
            self._cache.pop(rel, None)

    def _commit(self, manifest: Manifest) -> Manifest:
        for _ in range(10):
            self.job.check_current(self.attempt)
            if self.job.commit(manifest):
                return manifest
            # Someone else took this number. If they are newer, check_current says so next
            # time round; otherwise (a stale attempt racing us) we commit after them.
            latest = (self.job.sequences() or [manifest.sequence])[-1]
            manifest = replace(manifest, sequence=max(latest, manifest.sequence) + 1)
        raise CommitConflict(f"{self.job.prefix}manifests/: lost the commit race ten times")

    def pending_bytes(self) -> int:
        """Bytes in files that changed since the last commit (a cheap stat walk, no reads)."""
        files = _scan(self.directory).files
        present = self._present()
        return sum(st.st_size for rel, st in files if self._unchanged(rel, st, present) is None)

    def _present(self) -> set[str]:
        """Blobs a sync may take as stored: the base manifest's, and our recent uploads."""
        cutoff = time.monotonic() - UPLOAD_TRUST_SECONDS
        # A copy first: a sync thread may be adding to it while the main thread asks.
        uploaded = self._uploaded.copy()
        return self._known | {h for h, t in uploaded.items() if t >= cutoff}

    def _unchanged(
        self, rel: str, st: os.stat_result, present: set[str]
    ) -> tuple[Chunk, ...] | None:
        """The chunks of a file that has not changed since they were hashed and uploaded."""
        cached = self._cache.get(rel)
        if cached is None or not all(c.sha256 in present for c in cached.chunks):
            return None
        if cached.key != _stat_key(st):
            return None
        return cached.chunks

    def prune(self, keep: int) -> list[int]:
        """Delete all but the ``keep`` newest manifests; ``gc`` collects their blobs later."""
        old = self.job.sequences()[:-keep] if keep > 0 else []
        self.job.store.delete_objects(self.job.manifest_key(seq) for seq in old)
        return old

    # -- restore ------------------------------------------------------------------------

    def restore(self, sequence: int | None = None, into: Path | None = None) -> RestoreResult:
        """Restore ``sequence`` (default: the newest intact checkpoint) into the dir.

        A checkpoint whose manifest is malformed or whose blobs are missing or damaged is
        passed over, loudly, for the one before it. Raises :class:`CheckpointDamaged` only
        when an explicitly requested sequence cannot be restored.
        """
        with self._lock:
            return self._restore(sequence, into)

    def _restore(self, sequence: int | None, into: Path | None) -> RestoreResult:
        started = time.monotonic()
        dest = into or self.directory
        candidates = [sequence] if sequence is not None else self.job.sequences()[::-1]
        skipped: list[tuple[int, str]] = []
        for seq in candidates:
            try:
                manifest = self.job.load_manifest(seq)
                try:
                    written, kept, nbytes, extra = self._materialize(manifest, dest)
                except OSError as exc:  # local: the stored checkpoint is fine, do not skip it
                    raise LocalWriteError(
                        f"cannot restore checkpoint {seq} into {dest}: {_os_error(exc)}"
                    ) from exc
                except LocalWriteError as exc:
                    raise LocalWriteError(
                        f"cannot restore checkpoint {seq} into {dest}: {exc}"
                    ) from exc
            except (ManifestError, CheckpointDamaged, ObjectNotFound) as exc:
                if sequence is not None:
                    raise CheckpointDamaged(f"checkpoint {seq} cannot be restored: {exc}") from exc
                log.error(
                    "restore.checkpoint_damaged",
                    sequence=seq,
                    error=str(exc),
                    action="falling back to the previous checkpoint",
                )
                skipped.append((seq, str(exc)))
                continue
            if into is None:
                self.base = manifest
            return RestoreResult(
                manifest, written, kept, nbytes, time.monotonic() - started, tuple(skipped), extra
            )
        return RestoreResult(None, seconds=time.monotonic() - started, skipped=tuple(skipped))

    def _materialize(self, manifest: Manifest, dest: Path) -> tuple[int, int, int, int]:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = dest / RESERVED_DIR / f"restore-{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True, mode=0o700)
        try:
            kept, fetch = self._partition(manifest, dest)
            nbytes = self._download(fetch, staging)
            present = self._verify_present(kept)
            for d in manifest.dirs:
                _safe_makedirs(dest, d)
            for i, f in enumerate(fetch):
                target = _safe_parent(dest, f.path) / f.path.rsplit("/", 1)[-1]
                _clear_for_file(target)
                os.replace(staging / str(i), target)
            for lk in manifest.links:
                target = _safe_parent(dest, lk.path) / lk.path.rsplit("/", 1)[-1]
                _clear_for_file(target)
                os.symlink(check_link_target(lk.target), target)
        finally:
            _rmtree(staging)
            with contextlib.suppress(OSError):
                staging.parent.rmdir()  # only if empty: it may hold the job's progress
        if dest == self.directory:
            for f in manifest.files:
                st = os.lstat(dest / f.path)
                self._remember(f.path, st, f.chunks)
            fetched = {c.sha256 for f in fetch for c in f.chunks}
            self._known = fetched | present
        listed = {f.path for f in manifest.files} | {lk.path for lk in manifest.links}
        extra = sum(1 for rel, _ in _scan(dest).files if rel not in listed)
        return len(fetch), len(kept), nbytes, extra

    def _partition(self, manifest: Manifest, dest: Path) -> tuple[list[FileEntry], list[FileEntry]]:
        """Files already present with the right content are kept; the rest are fetched."""
        kept, fetch = [], []
        for f in manifest.files:
            path = dest / f.path
            if not _real_parents(dest, f.path):
                fetch.append(f)  # a link on the way could lead out of the checkpoint dir
                continue
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                fetch.append(f)
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size == f.size and _matches(path, f):
                os.chmod(path, f.mode)
                os.utime(path, ns=(f.mtime_ns, f.mtime_ns))
                kept.append(f)
            else:
                fetch.append(f)
        return kept, fetch

    def _download(self, files: list[FileEntry], staging: Path) -> int:
        futures: list[Future[int]] = []
        fds: list[int] = []
        try:
            for i, f in enumerate(files):
                fd = os.open(staging / str(i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                fds.append(fd)
                try:
                    os.ftruncate(fd, f.size)
                except OSError as exc:
                    raise LocalWriteError(f"{f.path} ({f.size} bytes): {exc.strerror}") from exc
                offset = 0
                for c in f.chunks:
                    futures.append(self._pool.submit(self._fetch_chunk, c, fd, offset, f.path))
                    offset += c.size
            total = 0
            errors = []
            for fut in futures:
                try:
                    total += fut.result()
                except (CheckpointDamaged, ObjectNotFound) as exc:
                    errors.append(exc)
            if errors:
                raise CheckpointDamaged(f"{len(errors)} chunk(s) bad, first: {errors[0]}")
            for fd, f in zip(fds, files, strict=True):
                os.fchmod(fd, f.mode)
                os.fsync(fd)
                os.utime(fd, ns=(f.mtime_ns, f.mtime_ns))
            return total
        finally:
            for fut in futures:
                fut.cancel()
            for fut in futures:
                if not fut.cancelled():
                    fut.exception()  # wait: no thread may still write into a closed fd
            for fd in fds:
                os.close(fd)

    def _fetch_chunk(self, chunk: Chunk, fd: int, offset: int, path: str) -> int:
        key = self.job.blob_key(chunk.sha256)
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            try:
                data = self.job.store.get_object(key)
            except ObjectNotFound:
                raise
            except StoreError as exc:
                if attempt == FETCH_ATTEMPTS:
                    raise
                log.warning("restore.fetch_retry", key=key, attempt=attempt, error=str(exc))
                continue
            if len(data) == chunk.size and hashlib.sha256(data).hexdigest() == chunk.sha256:
                break
            if attempt == FETCH_ATTEMPTS:  # the same wrong bytes each time: the blob is bad
                raise CheckpointDamaged(f"{key} (part of {path}) does not match its hash")
            log.warning("restore.fetch_retry", key=key, attempt=attempt, error="hash mismatch")
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:
            raise LocalWriteError(f"{path}: {exc.strerror}") from exc
        return len(data)

    def _verify_present(self, kept: list[FileEntry]) -> set[str]:
        """Kept files were not downloaded: which of their blobs does the store still have?"""
        wanted = sorted({c.sha256 for f in kept for c in f.chunks})
        present = self._pool.map(lambda h: self.job.store.exists(self.job.blob_key(h)), wanted)
        missing = [h for h, ok in zip(wanted, present, strict=True) if not ok]
        if missing:
            # The local copy is intact, so the job loses nothing: the next sync uploads them.
            log.warning(
                "restore.blobs_missing_in_store",
                count=len(missing),
                action="they will be uploaded again by the next sync",
            )
        return set(wanted) - set(missing)


class _Uploader:
    """Uploads chunks in parallel with a bound on the bytes held in memory."""

    def __init__(self, job: JobStore, pool: ThreadPoolExecutor, known: set[str]) -> None:
        self.job = job
        self.pool = pool
        self.known = known
        self.done: set[str] = set()
        self.bytes = 0
        self._pending: dict[str, Future[None]] = {}
        # One chunk in hand per transfer plus two being read: 18 x 8 MiB with S3's 16.
        self._slots = threading.BoundedSemaphore(job.store.concurrency + 2)
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def put(self, chunk: Chunk, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        h = chunk.sha256
        if h in self.known or h in self._pending:
            return
        self._slots.acquire()
        fut = self.pool.submit(self._put, h, data)
        self._pending[h] = fut
        fut.add_done_callback(lambda _f: self._slots.release())

    def _put(self, h: str, data: bytes) -> None:
        try:
            self.job.store.put_object(self.job.blob_key(h), data, sha256=h)
        except BaseException as exc:
            self._error = exc
            raise
        with self._lock:
            self.done.add(h)
            self.bytes += len(data)

    def wait(self) -> None:
        for fut in self._pending.values():
            fut.exception()
        if self._error is not None:
            raise self._error


def _open_regular(path: Path) -> int:
    """A read descriptor for a regular file; never blocks on a FIFO or device, never
    follows a symlink that replaced the file since the scan (FileNotFoundError then)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # now a symlink, or a socket/FIFO
            raise FileNotFoundError(exc.errno, f"{path}: no longer a regular file") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, f"{path}: no longer a regular file")
    return fd


def _hash_file(
    path: Path, chunk_size: int, uploader: _Uploader
) -> tuple[tuple[Chunk, ...], os.stat_result]:
    chunks = []
    with open(_open_regular(path), "rb", buffering=0) as fh:
        while True:
            data = fh.read(chunk_size)
            if not data:
                break
            chunk = Chunk(hashlib.sha256(data).hexdigest(), len(data))
            uploader.put(chunk, data)
            chunks.append(chunk)
        after = os.fstat(fh.fileno())
    return tuple(chunks), after


def _matches(path: Path, entry: FileEntry) -> bool:
    try:
        with open(_open_regular(path), "rb", buffering=0) as fh:
            for c in entry.chunks:
                data = fh.read(c.size)
                if len(data) != c.size or hashlib.sha256(data).hexdigest() != c.sha256:
                    return False
            return not fh.read(1)
    except OSError:
        return False


def _scan(root: Path) -> _Scan:
    """Regular files, dirs and safe symlinks below root, in a stable order."""
    out = _Scan()

    def walk(dirpath: Path, rel: str) -> None:
        try:
            entries = sorted(os.scandir(dirpath), key=lambda e: e.name)
        except FileNotFoundError:
            return
        except OSError as exc:  # not skipped: a checkpoint without it would lose it quietly
            raise CheckpointError(f"cannot read directory {dirpath}: {exc.strerror}") from exc
        for e in entries:
            r = f"{rel}{e.name}"
            if not rel and e.name == RESERVED_DIR:
                continue
            if e.name.endswith(TEMP_SUFFIX):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(e.path)
                try:
                    out.links.append(LinkEntry(r, check_link_target(target)))
                except ManifestError as exc:
                    out.skipped.append((r, f"symlink not checkpointed: {exc}"))
            elif stat.S_ISDIR(st.st_mode):
                out.dirs.append(r)
                walk(Path(e.path), r + "/")
            elif stat.S_ISREG(st.st_mode):
                out.files.append((r, st))
            else:
                out.skipped.append((r, "not a regular file, directory or symlink"))

    walk(root, "")
    return out


def _content(m: Manifest) -> Any:
    return (m.files, m.dirs, m.links, m.progress)


def _read_progress(directory: Path) -> dict[str, Any]:
    try:
        doc = json.loads((directory / RESERVED_DIR / PROGRESS_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _real_parents(root: Path, rel: str) -> bool:
    """Every directory between root and rel exists and is a real directory, not a link."""
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            if not stat.S_ISDIR(os.lstat(cur).st_mode):
                return False
        except OSError:
            return False
    return True


def _safe_parent(root: Path, rel: str) -> Path:
    """The real directory that will hold ``rel``, created as needed, never through a link."""
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        _ensure_real_dir(cur)
    return cur


def _safe_makedirs(root: Path, rel: str) -> None:
    cur = root
    for part in rel.split("/"):
        cur = cur / part
        _ensure_real_dir(cur)


def _ensure_real_dir(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, 0o700)
        return
    if stat.S_ISDIR(st.st_mode):
        return
    # A file or a symlink where the checkpoint has a directory: the checkpoint wins, and a
    # symlink is never followed (it could lead out of the checkpoint dir).
    os.unlink(path)
    os.mkdir(path, 0o700)


def _clear_for_file(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        _rmtree(path)
    else:
        os.unlink(path)


def _os_error(exc: OSError) -> str:
    """'path: No space left on device', without Python's '[Errno 28]' noise."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "CHUNK_SIZE",
    "Checkpointer",
    "FileChanged",
    "FrozenFilesChanged",
    "JobStore",
    "RestoreResult",
    "StoreError",
    "SyncResult",
]
