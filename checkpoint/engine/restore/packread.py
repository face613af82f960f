"""Restore the files that have chunks in packs: ranged GETs, coalesced, each chunk verified.

Called by :meth:`.download.Downloader.download` for every file with at least one packed
chunk (small files; sync never packs a file of ``PACK_THRESHOLD`` or more, but a
big file may reuse a chunk that some small file put in a pack). The chunks are read in
the files' order, in batches of about ``pack_batch_bytes`` (of the
:class:`~checkpoint.engine.config.EngineConfig`); the next batch is fetched while
the current one is written, so at most two batches are in memory.

Within a batch, the needed chunks of one pack are read with as few ranged GETs as make
sense: neighbours closer than ``coalesce_gap`` share a request, up to ``max_range``
bytes each (several requests in parallel beat one long one). Every chunk is checked against
its hash (BLAKE3 or sha256, as its id says) before it is written; a mismatch is read once
more on its own, and the same wrong bytes twice mean the stored pack is damaged
(:class:`CheckpointDamaged`: restore passes over to the checkpoint before).

Each file is written whole, on the caller's thread: open, write, fchmod, utime, close. At
most two files are open at once (one may straddle two batches).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from checkpoint.errors import CheckpointDamaged, LocalWriteError

from ..config import DEFAULTS, EngineConfig
from ..format import hashes
from ..format.jobstore import JobStore
from ..format.manifest import Chunk, FileEntry
from ..progress import Progress

log = structlog.get_logger("checkpoint")

#: A chunk whose bytes do not match its hash is fetched this many times in all (a flipped
#: bit in transit); the same wrong bytes twice mean the stored object is bad. Network
#: errors are the store's to retry, not ours. Restore's every read uses this one count.
HASH_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class _Piece:
    index: int  # the file's index: its staging name
    at: int  # offset in the file
    chunk: Chunk
    path: str  # the file's path, for messages


_Batch = list[_Piece]
_Got = list[tuple[int, bytes | memoryview]]  # (piece number in its batch, verified bytes)


class PackReader:
    def __init__(
        self,
        job: JobStore,
        pool: ThreadPoolExecutor,
        progress: Progress | None = None,
        *,
        config: EngineConfig = DEFAULTS,
        batch_bytes: int | None = None,
    ) -> None:
        """``batch_bytes``: chunk bytes in one batch at most (default the config's
        ``pack_batch_bytes``); two batches, one fetched and one written, are held at once."""
        self.job = job
        self._batch_bytes = config.pack_batch_bytes if batch_bytes is None else batch_bytes
        self._gap, self._max_range = config.coalesce_gap, config.max_range
        self._pool = pool
        self._progress = progress
        self._open: dict[int, tuple[int, int]] = {}  # file index -> (fd, pieces still to write)

    def write(self, files: list[FileEntry], which: list[int], staging: Path) -> int:
        """Write ``files[i]`` to ``staging/i`` for each i in ``which``; the bytes fetched."""
        total = 0
        ahead: deque[tuple[_Batch, list[Future[_Got]]]] = deque()
        try:
            for batch in _batches(files, which, self._batch_bytes):
                ahead.append((batch, self._fetch(batch)))
                if len(ahead) > 1:
                    total += self._write(files, staging, *ahead.popleft())
            while ahead:
                total += self._write(files, staging, *ahead[0])
                ahead.popleft()
        finally:
            for _, futures in ahead:  # after an error: stop what has not started
                for fut in futures:
                    fut.cancel()
            for _, futures in ahead:
                for fut in futures:
                    if not fut.cancelled():
                        fut.exception()
            for fd, _ in self._open.values():
                os.close(fd)
            self._open.clear()
        return total

    # -- fetching (pool threads)

    def _fetch(self, batch: _Batch) -> list[Future[_Got]]:
        by_pack: dict[str, list[int]] = {}
        futures = []
        for n, piece in enumerate(batch):
            if piece.chunk.pack is None:
                futures.append(self._pool.submit(self._read_blob, batch, n))
            else:
                by_pack.setdefault(piece.chunk.pack, []).append(n)
        for pack, numbers in by_pack.items():
            numbers.sort(key=lambda n: batch[n].chunk.offset)
            for group in _ranges(batch, numbers, self._gap, self._max_range):
                futures.append(self._pool.submit(self._read_range, pack, batch, group))
        return futures

    def _read_range(self, pack: str, batch: _Batch, group: list[int]) -> _Got:
        key = self.job.pack_key(pack)
        start = batch[group[0]].chunk.offset
        end = max(batch[n].chunk.offset + batch[n].chunk.size for n in group)
        data = memoryview(self.job.store.get_range(key, start, end - start))
        got: _Got = []
        for n in group:
            c = batch[n].chunk
            piece: bytes | memoryview = data[c.offset - start : c.offset - start + c.size]
            if not _matches(piece, c):
                log.warning("restore.fetch_retry", key=key, attempt=1, error="hash mismatch")
                piece = self.job.store.get_range(key, c.offset, c.size)
                if not _matches(piece, c):
                    raise CheckpointDamaged(
                        f"{key} bytes {c.offset}+{c.size} (part of {batch[n].path}) do not "
                        "match their hash"
                    )
            got.append((n, piece))
        return got

    def _read_blob(self, batch: _Batch, n: int) -> _Got:
        c = batch[n].chunk
        key = self.job.blob_key(c.digest)
        for attempt in range(1, HASH_ATTEMPTS + 1):
            data = self.job.store.get_object(key, max_bytes=c.size)
            if _matches(data, c):
                return [(n, data)]
            if attempt == HASH_ATTEMPTS:
                break
            log.warning("restore.fetch_retry", key=key, attempt=attempt, error="hash mismatch")
        raise CheckpointDamaged(f"{key} (part of {batch[n].path}) does not match its hash")

    # -- writing (the caller's thread)

    def _write(
        self, files: list[FileEntry], staging: Path, batch: _Batch, futures: list[Future[_Got]]
    ) -> int:
        data: dict[int, bytes | memoryview] = {}
        for fut in futures:
            data.update(fut.result())
        futures.clear()
        total = 0
        for n, piece in enumerate(batch):
            chunk = data.pop(n)
            fd = self._fd(files, staging, piece.index)
            f = files[piece.index]
            try:
                view = memoryview(chunk)
                at = piece.at
                while view:
                    written = os.pwrite(fd, view, at)
                    view, at = view[written:], at + written
            except OSError as exc:
                raise LocalWriteError(f"{f.path}: {exc.strerror}") from exc
            total += len(chunk)
            if self._progress is not None:
                self._progress.add(len(chunk))
            fd, left = self._open[piece.index]
            if left > 1:
                self._open[piece.index] = (fd, left - 1)
                continue
            del self._open[piece.index]
            try:
                os.fchmod(fd, f.mode)
                os.utime(fd, ns=(f.mtime_ns, f.mtime_ns))
            finally:
                os.close(fd)
        return total

    def _fd(self, files: list[FileEntry], staging: Path, index: int) -> int:
        if index in self._open:
            return self._open[index][0]
        f = files[index]
        fd = os.open(
            staging / str(index), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        try:
            os.ftruncate(fd, f.size)  # holes stay holes: nothing is written there
        except OSError as exc:
            os.close(fd)
            raise LocalWriteError(f"{f.path} ({f.size} bytes): {exc.strerror}") from exc
        self._open[index] = (fd, sum(1 for c in f.chunks if not c.is_hole))
        return fd


def packed_files(files: list[FileEntry]) -> list[int]:
    """The indices of the files with a chunk in a pack: :class:`PackReader` writes them."""
    return [i for i, f in enumerate(files) if any(c.pack is not None for c in f.chunks)]


def _batches(files: list[FileEntry], which: list[int], limit: int) -> Iterator[_Batch]:
    batch: _Batch = []
    size = 0
    for i in which:
        f = files[i]
        at = 0
        for c in f.chunks:
            if not c.is_hole:
                batch.append(_Piece(i, at, c, f.path))
                size += c.size
                if size >= limit:
                    yield batch
                    batch, size = [], 0
            at += c.size
    if batch:
        yield batch


def _ranges(batch: _Batch, numbers: list[int], gap: int, max_range: int) -> Iterator[list[int]]:
    """Pieces of one pack (sorted by offset) grouped into ranged reads: neighbours closer
    than ``gap`` share a read, of at most about ``max_range`` bytes."""
    group: list[int] = []
    start = end = 0
    for n in numbers:
        c = batch[n].chunk
        if group and (c.offset - end >= gap or c.offset + c.size - start > max_range):
            yield group
            group = []
        if not group:
            start = end = c.offset
        group.append(n)
        end = max(end, c.offset + c.size)
    if group:
        yield group


def _matches(data: bytes | memoryview, chunk: Chunk) -> bool:
    return len(data) == chunk.size and hashes.matches(chunk.digest, data)
