"""Download the chunks of restored files into a staging dir, verified, with bounded resources.

At most ``max_open_files`` (:class:`~checkpoint.engine.config.EngineConfig`) staging files
are open at once, whatever the file count (restore works under ``ulimit -n 256``): files are
opened in order, and the oldest is finished (mode, mtime, close) before one more is opened.
The chunks being fetched hold at most ``max_bytes_in_flight`` bytes at once: a chunk a store
streams holds one piece at a time (:attr:`Store.stream_piece`), so a big file's chunks are
fetched as many at once as the pool has threads, and the wait for each GET's first byte
overlaps the others'. Hole chunks are never fetched: ``ftruncate`` leaves them as holes. A
blob is read with ``max_bytes`` set to the size its manifest gives, so an oversized object
is refused before its body is read.

Each chunk streams from the store straight into its place in the file, hashed piece by
piece as it arrives in its own algorithm (:mod:`..format.hashes`: BLAKE3 and sha256, like
``pwrite``, let go of the GIL), so writing
overlaps downloading. A staging file is not fsynced: the store holds the durable copy,
and a host crash that loses written pages is a reboot, after which the local index is
not trusted and the files are checked again (as s5cmd and the AWS CLI, which never fsync).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from checkpoint.errors import CheckpointDamaged, LocalWriteError, ObjectNotFound, ObjectTooLarge

from ..budget import ByteBudget
from ..config import DEFAULTS, EngineConfig
from ..format import hashes
from ..format.jobstore import JobStore
from ..format.manifest import Chunk, FileEntry
from ..progress import Listener, Progress
from .packread import HASH_ATTEMPTS, PackReader, packed_files

log = structlog.get_logger("checkpoint")


@dataclass
class _OpenFile:
    fd: int
    entry: FileEntry
    futures: list[Future[int]] = field(default_factory=list)


class Downloader:
    def __init__(
        self,
        job: JobStore,
        pool: ThreadPoolExecutor,
        listener: Listener | None = None,
        *,
        config: EngineConfig = DEFAULTS,
    ) -> None:
        self.job = job
        self._pool = pool
        self.config = config
        self.budget = ByteBudget(config.max_bytes_in_flight)
        self._listener = listener
        self._progress: Progress | None = None

    def _pack_batch_bytes(self) -> int:
        """Two batches of packed files are held at once: together within the bound."""
        return max(1 << 20, min(self.config.pack_batch_bytes, self.budget.limit // 2))

    def download(
        self, files: list[FileEntry], staging: Path, progress: Progress | None = None
    ) -> int:
        """Write ``files[i]`` to ``staging/i``; the bytes downloaded. ``progress``: where
        they are counted, when these files are a part of what a restore moves (default: a
        report of these files alone)."""
        if progress is None:
            wanted = sum(c.size for f in files for c in f.chunks if not c.is_hole)
            progress = Progress(
                "restore.progress",
                wanted,
                listener=self._listener,
                every=self.config.progress_seconds,
            )
        self._progress = progress
        total = 0
        packed = packed_files(files)  # small files: written whole from ranged pack reads
        if packed:
            reader = PackReader(
                self.job,
                self._pool,
                self._progress,
                config=self.config,
                batch_bytes=self._pack_batch_bytes(),
            )
            total += reader.write(files, packed, staging)
        skip = set(packed)
        window: deque[_OpenFile] = deque()
        try:
            for i, f in enumerate(files):
                if i in skip:
                    continue
                if len(window) >= self.config.max_open_files:
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
        try:
            for c in f.chunks:
                if not c.is_hole:
                    held = self._held(c.size)
                    self.budget.acquire(held)  # released by _fetch, however it ends
                    try:
                        fut = self._pool.submit(self._fetch, c, held, fd, offset, f.path)
                    except BaseException:
                        self.budget.release(held)
                        raise
                    opened.futures.append(fut)
                offset += c.size
        except BaseException:
            _abandon(opened)  # not in the window yet: nobody else would close it
            raise
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
            os.utime(opened.fd, ns=(f.mtime_ns, f.mtime_ns))
            return total
        finally:
            _abandon(opened)

    def _held(self, size: int) -> int:
        """What fetching a chunk of ``size`` bytes holds in memory at once: one piece of a
        store that streams, else the whole chunk."""
        piece = self.job.store.stream_piece
        return size if piece is None else min(size, piece)

    def _fetch(self, chunk: Chunk, held: int, fd: int, offset: int, path: str) -> int:
        key = self.job.blob_key(chunk.digest)
        try:
            for attempt in range(1, HASH_ATTEMPTS + 1):
                into = _ChunkWriter(fd, offset, chunk, key, path)
                n = self.job.store.get_object_into(key, into.write, max_bytes=chunk.size)
                if n == chunk.size and into.matches():
                    break
                if attempt == HASH_ATTEMPTS:  # the same wrong bytes each time: the blob is bad
                    raise CheckpointDamaged(f"{key} (part of {path}) does not match its hash")
                log.warning("restore.fetch_retry", key=key, attempt=attempt, error="hash mismatch")
        finally:
            self.budget.release(held)
        if self._progress is not None:
            self._progress.add(n)
        return n


class _ChunkWriter:
    """Writes the pieces of one chunk at its offset in the file, hashing them as they pass.

    A piece at position 0 starts the chunk over (the store read it again). Bytes past the
    chunk's size are refused unwritten: they would land on the next chunk's bytes.
    """

    def __init__(self, fd: int, offset: int, chunk: Chunk, key: str, path: str) -> None:
        self.fd, self.offset, self.size, self.key, self.path = fd, offset, chunk.size, key, path
        self._hash = hashes.Verifier(chunk.digest)

    def write(self, pos: int, piece: bytes | memoryview) -> None:
        if pos == 0:
            self._hash.restart()
        if pos + len(piece) > self.size:
            raise ObjectTooLarge(self.key, pos + len(piece), self.size)
        self._hash.update(piece)
        view, at = memoryview(piece), self.offset + pos
        try:
            while view:
                n = os.pwrite(self.fd, view, at)
                view, at = view[n:], at + n
        except OSError as exc:
            raise LocalWriteError(f"{self.path}: {exc.strerror}") from exc

    def matches(self) -> bool:
        """Do the bytes written hash to the chunk's id?"""
        return self._hash.matches()


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
