"""Upload chunks in parallel, each blob once, with a bound on the bytes held in memory."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from .budget import DEFAULT_MAX_BYTES_IN_FLIGHT, ByteBudget
from .jobstore import JobStore
from .manifest import Chunk
from .progress import Progress


class Uploader:
    """Uploads chunks in parallel with a bound on the bytes held in memory."""

    def __init__(
        self,
        job: JobStore,
        pool: ThreadPoolExecutor,
        known: set[str],
        progress: Progress | None = None,
        *,
        max_bytes_in_flight: int = DEFAULT_MAX_BYTES_IN_FLIGHT,
    ) -> None:
        self.job = job
        self.progress = progress  # counts every data chunk read, uploaded or already stored
        self.pool = pool
        self.known = known
        self.done: set[str] = set()
        self.bytes = 0
        self._pending: dict[str, Future[None]] = {}
        # The chunks handed over and not yet stored, and the next one read meanwhile: at
        # most max_bytes_in_flight (6 chunks of 8 MiB by default, one of them in hand).
        self.budget = ByteBudget(max_bytes_in_flight)
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def put(self, chunk: Chunk, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self.progress is not None:
            self.progress.add(len(data))
        h = chunk.sha256
        if h in self.known or h in self._pending:
            return
        size = len(data)
        self.budget.acquire(size, headroom=size)  # room for the next chunk read meanwhile
        try:
            fut = self.pool.submit(self._put, h, data)
        except BaseException:
            self.budget.release(size)
            raise
        self._pending[h] = fut
        fut.add_done_callback(lambda _f: self.budget.release(size))

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
