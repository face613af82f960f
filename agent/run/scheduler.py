"""When to sync, and how much time to keep for the last one: pure arithmetic, no I/O.

The loop asks the scheduler what to do and tells it what happened; every time is a
``time.monotonic()`` reading passed in, so tests drive it with made-up clocks.

- Cadence: a periodic sync ``interval`` seconds after the last one ended; one sync at a
  time, and a request while one runs is kept (once) for when it ends.
- Upload rate: measured on syncs that uploaded enough to say something.
- Reserve: how long before the deadline the job must be gone for the final checkpoint to
  commit in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from checkpoint.sync import SyncResult

from ..notices import Notice

#: a sync must upload at least this much for its rate to size the upload reserve
RATE_SAMPLE_BYTES = 4 << 20
#: the job always gets at least this share of the time left to stop by itself
JOB_SHARE = 0.2
#: the longest the loop waits on its queue: no periodic sync or reap waits longer
MAX_WAIT = 0.5


@dataclass(frozen=True)
class Interruption:
    """The notice being acted on, and its deadline converted once, on arrival, to the
    monotonic clock: a wall-clock step after that cannot move it."""

    notice: Notice
    deadline: float

    @classmethod
    def arrived(cls, notice: Notice, at: float, grace_period: float) -> Interruption:
        if notice.deadline is None:
            return cls(notice, at + grace_period)
        return cls(notice, at + (notice.deadline - notice.received).total_seconds())

    def seconds_left(self, now: float) -> float:
        return self.deadline - now


@dataclass(frozen=True)
class ReservePlan:
    """Time kept back for the final checkpoint, and the figures it was sized from."""

    reserve: float
    pending_bytes: int
    upload_rate: float | None
    last_sync_seconds: float

    def log_fields(self) -> dict[str, Any]:
        return {
            "pending_bytes": self.pending_bytes,
            "upload_rate": round(self.upload_rate) if self.upload_rate else None,
            "last_sync_seconds": round(self.last_sync_seconds, 3),
            "reserve_seconds": round(self.reserve, 3),
        }


class SyncScheduler:
    def __init__(self, interval: float, min_reserve: float) -> None:
        self.interval = interval
        self.min_reserve = min_reserve
        self.running = False
        self.closing = False  # the final sync is under way: nothing else starts
        self.queued: str | None = None
        self.next_periodic = float("inf")
        self.upload_rate: float | None = None  # bytes/s of the last sizeable sync
        self.last_sync_seconds = 0.0

    def schedule(self, now: float) -> None:
        if self.interval > 0 and not self.closing:
            self.next_periodic = now + self.interval

    def due(self, now: float) -> bool:
        return now >= self.next_periodic

    def wait_time(self, now: float) -> float:
        return min(max(self.next_periodic - now, 0.0), MAX_WAIT)

    def request(self, reason: str) -> str | None:
        """A sync is wanted: the reason to start one with now, or None (queued or closed)."""
        if self.closing:
            return None
        self.next_periodic = float("inf")
        if self.running:
            self.queued = self.queued or reason
            return None
        self.running = True
        return reason

    def finished(self, now: float, result: SyncResult | None) -> str | None:
        """A sync ended (``None``: it failed): the reason of the next one to start now."""
        self.running = False
        if result is not None:
            self.last_sync_seconds = result.seconds
            if result.bytes_uploaded >= RATE_SAMPLE_BYTES:
                self.upload_rate = result.bytes_uploaded / max(result.seconds, 1e-3)
        if self.closing:
            return None
        if self.queued is not None:
            again, self.queued = self.queued, None
            self.running = True
            return again
        self.schedule(now)
        return None

    def close(self) -> None:
        """No periodic or requested syncs from now on (the final one is the loop's)."""
        self.closing = True
        self.queued = None
        self.next_periodic = float("inf")

    def reserve(self, budget: float, pending_bytes: int) -> ReservePlan:
        """At least the minimum reserve; more when the last sync took longer, or when the
        bytes changed since the last commit would take longer at the last measured rate.
        Never more than 80% of ``budget`` (the time left): the job needs time to stop."""
        estimate = pending_bytes / self.upload_rate if self.upload_rate else 0.0
        wanted = max(self.min_reserve, 2.0 * self.last_sync_seconds, 1.5 * estimate)
        return ReservePlan(
            reserve=min(wanted, (1.0 - JOB_SHARE) * max(budget, 0.0)),
            pending_bytes=pending_bytes,
            upload_rate=self.upload_rate,
            last_sync_seconds=self.last_sync_seconds,
        )
