"""Download the chunks of restored files into a staging dir, verified, with bounded resources.

At most :data:`MAX_OPEN_FILES` staging files are open at once, whatever the file count
(restore works under ``ulimit -n 256``): files are opened in order, and the oldest is
finished (mode, fsync, mtime, close) before one more is opened. Hole chunks are never
fetched: ``ftruncate`` leaves them as holes. A blob is read with ``max_bytes`` set to the
size its manifest gives, so an oversized object is refused before its body is read.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .errors import CheckpointDamaged, LocalWriteError, ObjectNotFound, ObjectTooLarge
from .jobstore import JobStore
from .manifest import Chunk, FileEntry
from .packread import PackReader, packed_files
from .progress import Listener, Progress

log = structlog.get_logger("checkpoint")

#: Staging files open at once during a restore.
MAX_OPEN_FILES = 64
#: A chunk whose bytes do not match its hash is fetched this many times in all (a flipped
#: bit in transit); the same wrong bytes twice mean the stored blob is bad. Network errors
#: are the store's to retry, not ours.
HASH_ATTEMPTS = 2


@dataclass
class _OpenFile:
    fd: int
    entry: FileEntry
    futures: list[Future[int]] = field(default_factory=list)


class Downloader:
    def __init__(
        self, job: JobStore, pool: ThreadPoolExecutor, listener: Listener | None = None
    ) -> None:
        self.job = job
        self._pool = pool
        self._listener = listener
        self._progress: Progress | None = None

    def download(self, files: list[FileEntry], staging: Path) -> int:
        """Write ``files[i]`` to ``staging/i``; the bytes downloaded."""
        wanted = sum(c.size for f in files for c in f.chunks if not c.is_hole)
        self._progress = Progress("restore.progress", wanted, listener=self._listener)
        total = 0
        packed = packed_files(files)  # small files: written whole from ranged pack reads
        if packed:
            total += PackReader(self.job, self._pool, self._progress).write(files, packed, staging)
        skip = set(packed)
        window: deque[_OpenFile] = deque()
        try:
            for i, f in enumerate(files):
                if i in skip:
                    continue
                if len(window) >= MAX_OPEN_FILES:
                    total += self._finish(window.popleft())
                window.append(self._start(staging / str(i), f))
            while window:
                total += self._finish(window[0])
                window.popleft()
        finally:
            for left in window:  # after an error: stop, and close nothing a thread writes to
                _abandon(left)
        return total

    def _start(self, path: Path, f: FileEntry) -> _OpenFile:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        opened = _OpenFile(fd, f)
        try:
            os.ftruncate(fd, f.size)  # holes stay holes: nothing is written there
        except OSError as exc:
            os.close(fd)
            raise LocalWriteError(f"{f.path} ({f.size} bytes): {exc.strerror}") from exc
        offset = 0
        for c in f.chunks:
            if not c.is_hole:
                opened.futures.append(self._pool.submit(self._fetch, c, fd, offset, f.path))
            offset += c.size
        return opened

    def _finish(self, opened: _OpenFile) -> int:
        """Wait for one file's chunks, then give it its mode and mtime and close it."""
        try:
            total = 0
            errors = []
            for fut in opened.futures:
                try:
                    total += fut.result()
                except (CheckpointDamaged, ObjectNotFound, ObjectTooLarge) as exc:
                    errors.append(exc)
            if errors:
                raise CheckpointDamaged(f"{len(errors)} chunk(s) bad, first: {errors[0]}")
            f = opened.entry
            os.fchmod(opened.fd, f.mode)
            os.fsync(opened.fd)
            os.utime(opened.fd, ns=(f.mtime_ns, f.mtime_ns))
            return total
        finally:
            _abandon(opened)

    def _fetch(self, chunk: Chunk, fd: int, offset: int, path: str) -> int:
        key = self.job.blob_key(chunk.sha256)
        for attempt in range(1, HASH_ATTEMPTS + 1):
            data = self.job.store.get_object(key, max_bytes=chunk.size)
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
        if self._progress is not None:
            self._progress.add(len(data))
        return len(data)


def _abandon(opened: _OpenFile) -> None:
    """Cancel what has not started, wait for what has, then close the file (once)."""
    if opened.fd < 0:
        return
    for fut in opened.futures:
        fut.cancel()
    for fut in opened.futures:
        if not fut.cancelled():
            fut.exception()  # wait: no thread may still write into a closed fd
    os.close(opened.fd)
    opened.fd = -1
