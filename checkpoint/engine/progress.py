"""Progress of a long transfer: bytes done and total, rate, time left, every few seconds.

A multi-gigabyte sync or restore takes minutes; silence for that long looks like a hang.
One :class:`Progress` counts the bytes of one transfer from any number of threads and
reports at most every ``every`` seconds (``EngineConfig.progress_seconds``); a transfer
that ends sooner reports nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from .config import DEFAULTS

Listener = Callable[[str, dict[str, Any]], None]


def log_progress(event: str, fields: dict[str, Any]) -> None:
    """The default listener: one structured log event (``sync.progress``...)."""
    structlog.get_logger("checkpoint").info(event, **fields)


class Progress:
    def __init__(
        self,
        event: str,
        total: int,
        *,
        listener: Listener | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.event = event
        self.total = total
        self.done = 0
        self._listener = listener or log_progress
        # None: the agent's default (read now, so that it is one value of one config)
        self._every = DEFAULTS.progress_seconds if every is None else every
        self._clock = clock
        self._started = clock()
        self._next = self._started + self._every
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        """Count ``n`` more bytes; report if the last report is ``every`` seconds old."""
        with self._lock:
            self.done += n
            now = self._clock()
            if now < self._next:
                return
            self._next = now + self._every
            fields = self.figures(now)
        self._listener(self.event, fields)

    def expect(self, n: int) -> None:
        """``n`` more bytes to move than the total said (a second pass found more work)."""
        with self._lock:
            self.total += n

    def figures(self, now: float | None = None) -> dict[str, Any]:
        elapsed = max((self._clock() if now is None else now) - self._started, 1e-9)
        rate = self.done / elapsed
        # A file that grew while it was read moves more than its stat said: the total
        # follows, so that the percentage never passes 100.
        total = max(self.total, self.done)
        left = total - self.done
        return {
            "bytes_done": self.done,
            "bytes_total": total,
            "percent": round(100.0 * self.done / total, 1) if total else 100.0,
            "rate_bytes_per_second": round(rate),
            "eta_seconds": round(left / rate, 1) if rate > 0 else None,
            "elapsed_seconds": round(elapsed, 1),
        }
