"""Upload chunks in parallel, each content once, small files' chunks packed together.

A chunk of a big file is a blob of its own (``blobs/<h>``). A chunk of a small file (under
:data:`PACK_THRESHOLD`) is appended to the pack being built; the pack is sealed and PUT
once it holds :data:`PACK_TARGET` bytes, or when the sync ends (:meth:`Uploader.wait`).
A blob is named by its chunk's id, a pack by the BLAKE3 of its bytes (``packs/<p>``,
:mod:`..format.hashes`), so where its chunks lie is
known only once it is sealed: :attr:`Uploader.located` says, after the PUT succeeded.

The bytes held in memory (chunks being PUT, and the pack being built) stay under
``max_bytes_in_flight``: a put waits for room, and a pack being built is sealed early
rather than wait on its own bytes.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping, Set
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

from ..budget import DEFAULT_MAX_BYTES_IN_FLIGHT, ByteBudget
from ..format import hashes
from ..format.jobstore import JobStore
from ..format.manifest import Chunk
from ..progress import Progress
from .located import Located

#: Files smaller than this are packed. Measured (bench/packsize.py, local SeaweedFS): a
#: request costs as much as ~230 KiB (PUT) to ~1.5 MiB (GET) of transfer on one
#: connection, more on S3; a file of 1 MiB or more gains little from sharing a request,
#: and stays a blob that gc can drop on its own.
PACK_THRESHOLD = 1 << 20
#: A pack is sealed and PUT once it holds this many bytes: 20,000 x 16 KiB files make ~20.
PACK_TARGET = 16 << 20

Location = tuple[str, int]  # (pack id, offset in the pack)


@dataclass
class Stored:
    """Chunk contents known to be in the store, and where: blobs, and chunks in packs."""

    blobs: Set[str] = field(default_factory=set)
    packed: MutableMapping[str, Location] = field(default_factory=dict)

    def __contains__(self, digest: object) -> bool:
        return digest in self.blobs or digest in self.packed

    def hashes(self) -> set[str]:
        return {*self.blobs, *self.packed}

    def locate(self, chunk: Chunk) -> Chunk:
        """``chunk`` with the place its bytes are stored (a blob first); KeyError if none."""
        if chunk.is_hole or chunk.digest in self.blobs:
            return Chunk(chunk.digest, chunk.size)
        pack, offset = self.packed[chunk.digest]
        return Chunk(chunk.digest, chunk.size, pack, offset)


class Uploader:
    """Uploads chunks in parallel with a bound on the bytes held in memory."""

    def __init__(
        self,
        job: JobStore,
        pool: ThreadPoolExecutor,
        known: Stored,
        progress: Progress | None = None,
        *,
        max_bytes_in_flight: int = DEFAULT_MAX_BYTES_IN_FLIGHT,
        pack_target: int = PACK_TARGET,
    ) -> None:
        self.job = job
        self.progress = progress  # counts every data chunk read, uploaded or already stored
        self.pool = pool
        self.known = known
        self.pack_target = min(pack_target, max(1, max_bytes_in_flight // 2))
        self.done: set[str] = set()  # blobs stored by this uploader (packed: ``located``)
        self.bytes = 0
        self.located = Located()  # packed chunks whose pack is stored, and where
        self.packs: dict[str, int] = {}  # packs stored: id -> size
        self._queued: set[str] = set()
        self._pending: list[Future[None]] = []
        self.budget = ByteBudget(max_bytes_in_flight)
        self._building = bytearray()  # the pack being built: chunks back to back
        self._members: list[tuple[str, int]] = []  # (chunk hash, offset) in it
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def put(self, chunk: Chunk, data: bytes) -> None:
        """A chunk of a big file: its own blob."""
        if not self._wanted(chunk, data):
            return
        n = len(data)
        self._reserve(n)
        fut = self.pool.submit(self._put_blob, chunk.digest, data)
        fut.add_done_callback(lambda _f: self.budget.release(n))
        self._pending.append(fut)

    def pack(self, chunk: Chunk, data: bytes) -> None:
        """A chunk of a small file: into the pack being built."""
        if not self._wanted(chunk, data):
            return
        self._reserve(len(data))
        self._members.append((chunk.digest, len(self._building)))
        self._building += data  # one copy, and the caller's chunk can go
        if len(self._building) >= self.pack_target:
            self._seal()

    def wait(self) -> None:
        """Seal the last pack, wait for every upload; raise the first error."""
        if self._error is None:
            self._seal()
        for fut in self._pending:
            fut.exception()
        # Done with: the futures (their callbacks hold this uploader: a cycle that would
        # keep its sets alive until the next collection) and the hashes queued (the rest
        # of the sync, its peak, needs only what was stored: ``done`` and ``located``).
        self._pending, self._queued = [], set()
        if self._error is not None:
            raise self._error

    def _wanted(self, chunk: Chunk, data: bytes) -> bool:
        if self._error is not None:
            raise self._error
        if self.progress is not None:
            self.progress.add(len(data))
        h = chunk.digest
        if h in self.known or h in self._queued:
            return False
        self._queued.add(h)
        return True

    def _reserve(self, n: int) -> None:
        if not self.budget.try_acquire(n):
            self._seal()  # never wait for room the pack being built holds itself
            self.budget.acquire(n)

    def _seal(self) -> None:
        if not self._building:
            return
        data, members, size = self._building, self._members, len(self._building)
        self._building, self._members = bytearray(), []
        fut = self.pool.submit(self._put_pack, data, members)
        fut.add_done_callback(lambda _f: self.budget.release(size))
        self._pending.append(fut)

    def _put_blob(self, h: str, data: bytes) -> None:
        try:
            self.job.store.put_object(self.job.blob_key(h), data, sha256=hashes.sha256_hex(h))
        except BaseException as exc:
            self._error = exc
            raise
        with self._lock:
            self.done.add(h)
            self.bytes += len(data)

    def _put_pack(self, data: bytearray, members: list[tuple[str, int]]) -> None:
        try:
            # A bytearray is read like bytes by both stores (and botocore): no copy.
            p = hashes.new_id(cast(bytes, data))
            self.job.store.put_object(self.job.pack_key(p), cast(bytes, data))
        except BaseException as exc:
            self._error = exc
            raise
        with self._lock:
            self.packs[p] = len(data)
            self.located.add(p, members)
            self.bytes += len(data)
