"""Restore a committed checkpoint into a directory: choose, download, verify, put in place.

Every chunk is verified against its sha256 before it is used (guarantee 2); a checkpoint
whose manifest is malformed or whose blobs are missing or damaged is passed over, loudly,
for the one before it. Files are downloaded into a staging dir inside the destination and
moved into place only once every byte of the checkpoint has arrived, so a failed restore
leaves the directory as it was.

Retries live in one layer each: the store retries the network (botocore's retries, and
:class:`~checkpoint.s3store.S3Store` re-reads a body cut short); restore only fetches a
chunk once more when its bytes do not match their hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from .errors import CheckpointDamaged, LocalWriteError, ManifestError, ObjectNotFound
from .jobstore import JobStore
from .manifest import RESERVED_DIR, Chunk, FileEntry, Manifest, check_link_target
from .placement import (
    clear_for_file,
    os_error,
    real_parents,
    rmtree,
    safe_makedirs,
    safe_parent,
)
from .scan import file_matches, scan

log = structlog.get_logger("checkpoint")

#: A chunk whose bytes do not match its hash is fetched this many times in all (a flipped
#: bit in transit); the same wrong bytes twice mean the stored blob is bad.
HASH_ATTEMPTS = 2


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest | None
    files_written: int = 0
    files_kept: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    skipped: tuple[tuple[int, str], ...] = ()  # damaged checkpoints passed over
    extra_files: int = 0  # files in the dir that the checkpoint does not have


@dataclass(frozen=True)
class _Materialized:
    written: int
    kept: int
    nbytes: int
    extra: int
    present: frozenset[str]  # blobs known to be in the store after this restore


class Restorer:
    """Restores one job's checkpoints; transfers run on the caller's thread pool."""

    def __init__(self, job: JobStore, pool: ThreadPoolExecutor) -> None:
        self.job = job
        self._pool = pool
        #: blobs the restored checkpoint references that are known to be in the store
        self.present: frozenset[str] = frozenset()

    def restore(self, sequence: int | None, dest: Path) -> RestoreResult:
        """Restore ``sequence`` (default: the newest intact checkpoint) into ``dest``.

        Raises :class:`CheckpointDamaged` only when an explicitly requested sequence cannot
        be restored.
        """
        started = time.monotonic()
        candidates = [sequence] if sequence is not None else self.job.sequences()[::-1]
        skipped: list[tuple[int, str]] = []
        for seq in candidates:
            try:
                manifest = self.job.load_manifest(seq)
                try:
                    done = self._materialize(manifest, dest)
                except OSError as exc:  # local: the stored checkpoint is fine, do not skip it
                    raise LocalWriteError(
                        f"cannot restore checkpoint {seq} into {dest}: {os_error(exc)}"
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
            self.present = done.present
            return RestoreResult(
                manifest,
                done.written,
                done.kept,
                done.nbytes,
                time.monotonic() - started,
                tuple(skipped),
                done.extra,
            )
        return RestoreResult(None, seconds=time.monotonic() - started, skipped=tuple(skipped))

    def _materialize(self, manifest: Manifest, dest: Path) -> _Materialized:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = dest / RESERVED_DIR / f"restore-{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True, mode=0o700)
        try:
            kept, fetch = self._partition(manifest, dest)
            nbytes = self._download(fetch, staging)
            present = self._verify_present(kept)
            for d in manifest.dirs:
                safe_makedirs(dest, d)
            for i, f in enumerate(fetch):
                target = safe_parent(dest, f.path) / f.path.rsplit("/", 1)[-1]
                clear_for_file(target)
                os.replace(staging / str(i), target)
            for lk in manifest.links:
                target = safe_parent(dest, lk.path) / lk.path.rsplit("/", 1)[-1]
                clear_for_file(target)
                os.symlink(check_link_target(lk.target), target)
        finally:
            rmtree(staging)
            with contextlib.suppress(OSError):
                staging.parent.rmdir()  # only if empty: it may hold the job's progress
        listed = {f.path for f in manifest.files} | {lk.path for lk in manifest.links}
        extra = sum(1 for rel, _ in scan(dest).files if rel not in listed)
        fetched = {c.sha256 for f in fetch for c in f.chunks}
        return _Materialized(len(fetch), len(kept), nbytes, extra, frozenset(fetched | present))

    def _partition(self, manifest: Manifest, dest: Path) -> tuple[list[FileEntry], list[FileEntry]]:
        """Files already present with the right content are kept; the rest are fetched."""
        kept, fetch = [], []
        for f in manifest.files:
            path = dest / f.path
            if not real_parents(dest, f.path):
                fetch.append(f)  # a link on the way could lead out of the checkpoint dir
                continue
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                fetch.append(f)
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size == f.size and file_matches(path, f):
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
        for attempt in range(1, HASH_ATTEMPTS + 1):
            data = self.job.store.get_object(key)  # the store retries the network itself
            if len(data) == chunk.size and hashlib.sha256(data).hexdigest() == chunk.sha256:
                break
            if attempt == HASH_ATTEMPTS:  # the same wrong bytes each time: the blob is bad
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
