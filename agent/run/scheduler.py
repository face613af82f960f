"""When to sync, and how much time to keep for the last one: pure arithmetic, no I/O.

The loop asks the scheduler what to do and tells it what happened; every time is a
``time.monotonic()`` reading passed in, so tests drive it with made-up clocks.

- Cadence: a periodic sync ``interval`` seconds after the last one ended; one sync at a
  time, and a request while one runs is kept (once) for when it ends.
- Upload rate: measured on syncs that uploaded enough to say something.
- Early syncs: when the bytes changed since the last commit would take longer than
  ``max_pending_upload`` to upload, a sync starts before the periodic one is due, so the
  final checkpoint after a notice has that much to send at most. The bytes are measured
  by a stat walk off the loop thread, at an interval that grows with the walk's own cost.
- Reserve: how long before the deadline the job must be gone for the final checkpoint to
  commit in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from checkpoint.engine.save.sync import SyncResult

from ..notices import Notice

#: a sync must upload at least this much for its rate to size the upload reserve
RATE_SAMPLE_BYTES = 4 << 20
#: the job always gets at least this share of the time left to stop by itself
JOB_SHARE = 0.2
#: the longest the loop waits on its queue: no periodic sync or reap waits longer
MAX_WAIT = 0.5
#: the pending bytes are measured at most this often (a walk of a small dir is cheap)...
MEASURE_FLOOR = 2.0
#: ...and never for more than this share of the wall time (100,000 files: about a second
#: of walk, so one walk every 20 s)
WALK_SHARE = 0.05
#: the upload rate assumed before a sync has measured one: a slow network path (S3 from
#: EC2 usually does ten times this), so the first early sync comes too soon rather than
#: too late; that sync then measures the real rate
ASSUMED_UPLOAD_RATE = 8 << 20
EARLY = "early"  # the reason of an early sync
#: an early sync that uploaded less than this share of the pending bytes it was started
#: for found the walk's count too high (files rewritten in place with few changed chunks:
#: the walk counts their size, the sync sends only their changes); the next early sync
#: then waits, so that an overestimate cannot keep the agent syncing back to back
OVERCOUNT_SHARE = 0.5


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
    upload_rate: float  # bytes/s the pending bytes were sized with
    rate_source: str  # "measured" (by a sizeable sync) or "assumed" (none yet)
    last_sync_seconds: float

    def log_fields(self) -> dict[str, Any]:
        return {
            "pending_bytes": self.pending_bytes,
            "upload_rate": round(self.upload_rate),
            "rate_source": self.rate_source,
            "last_sync_seconds": round(self.last_sync_seconds, 3),
            "reserve_seconds": round(self.reserve, 3),
        }


@dataclass(frozen=True)
class EarlySync:
    """Why a sync starts early: the pending bytes would take too long to upload."""

    pending_bytes: int
    upload_rate: float
    rate_source: str  # "measured" (by a sizeable sync) or "assumed" (none yet)
    estimate: float  # seconds to upload the pending bytes at that rate
    threshold: float  # --max-pending-upload
    periodic_due_in: float | None  # seconds until the periodic sync (None: none is set)

    def log_fields(self) -> dict[str, Any]:
        return {
            "pending_bytes": self.pending_bytes,
            "upload_rate": round(self.upload_rate),
            "rate_source": self.rate_source,
            "estimate_seconds": round(self.estimate, 3),
            "threshold_seconds": round(self.threshold, 3),
            "periodic_due_in": (
                None if self.periodic_due_in is None else round(self.periodic_due_in, 3)
            ),
        }


class SyncScheduler:
    def __init__(
        self, interval: float, min_reserve: float, max_pending_upload: float = 0.0
    ) -> None:
        self.interval = interval
        self.min_reserve = min_reserve
        self.max_pending_upload = max_pending_upload  # 0: no early syncs
        self.running = False
        self.closing = False  # the final sync is under way: nothing else starts
        self.queued: str | None = None
        self.next_periodic = float("inf")
        self.upload_rate: float | None = None  # bytes/s of the last sizeable sync
        self.last_sync_seconds = 0.0
        self.syncs_started = 0  # a walk that saw a sync start meanwhile measured nothing
        self.measuring = False  # a walk of the dir for the pending bytes is under way
        self.next_measure = float("inf")
        self.measure_floor = MEASURE_FLOOR
        self.early_pending: int | None = None  # what the early sync under way was for
        self.hold_early_until = 0.0  # after an overcount: no early sync before this

    def schedule(self, now: float) -> None:
        """The job started, or a sync ended: the next periodic sync (and, once, the first
        measurement of the pending bytes) counts from now."""
        if self.interval > 0 and not self.closing:
            self.next_periodic = now + self.interval
        if self.next_measure == float("inf"):
            self.next_measure = now + self.measure_floor

    def due(self, now: float) -> bool:
        return now >= self.next_periodic

    def wait_time(self, now: float) -> float:
        wake = self.next_periodic
        if self._may_measure:
            wake = min(wake, self.next_measure)
        return min(max(wake - now, 0.0), MAX_WAIT)

    def request(self, reason: str) -> str | None:
        """A sync is wanted: the reason to start one with now, or None (queued or closed)."""
        if self.closing:
            return None
        self.next_periodic = float("inf")
        if self.running:
            self.queued = self.queued or reason
            return None
        self.running = True
        self.syncs_started += 1
        return reason

    def finished(self, now: float, result: SyncResult | None) -> str | None:
        """A sync ended (``None``: it failed): the reason of the next one to start now."""
        self.running = False
        if result is not None:
            self.last_sync_seconds = result.seconds
            if result.bytes_uploaded >= RATE_SAMPLE_BYTES:
                self.upload_rate = result.bytes_uploaded / max(result.seconds, 1e-3)
            if self.early_pending and result.bytes_uploaded < OVERCOUNT_SHARE * self.early_pending:
                self.hold_early_until = now + max(result.seconds, self.max_pending_upload)
        self.early_pending = None
        if self.closing:
            return None
        if self.queued is not None:
            again, self.queued = self.queued, None
            self.running = True
            self.syncs_started += 1
            return again
        self.schedule(now)
        return None

    def close(self) -> None:
        """No periodic or requested syncs from now on (the final one is the loop's)."""
        self.closing = True
        self.queued = None
        self.next_periodic = float("inf")

    # -- early syncs ----------------------------------------------------------------------

    def measure_due(self, now: float) -> bool:
        """Time to walk the dir for the pending bytes: never while a sync runs (it is
        committing them anyway), while closing, or while the last walk still runs."""
        return self._may_measure and now >= self.next_measure

    @property
    def _may_measure(self) -> bool:
        return self.max_pending_upload > 0 and not (self.running or self.closing or self.measuring)

    def never_measure(self) -> None:
        """Nothing to measure, ever (no checkpoints, or a newer attempt took over)."""
        self.next_measure = float("inf")

    def measure_dropped(self) -> None:
        """A walk's result came when the run was ending: the final sync commits it all."""
        self.measuring = False

    def measuring_started(self) -> int:
        """A walk starts: the token to hand back with its result."""
        self.measuring = True
        return self.syncs_started

    def measured(
        self, now: float, token: int, pending_bytes: int | None, walk_seconds: float
    ) -> EarlySync | None:
        """A walk ended (``None``: it failed): the early sync to start now (with
        ``request(EARLY)``), if one is due.

        The next walk is at least ``measure_floor`` seconds away, and far enough for the
        walks to take at most ``WALK_SHARE`` of the time. A walk during which a sync
        started says nothing: that sync commits what it counted."""
        self.measuring = False
        self.next_measure = now + max(self.measure_floor, walk_seconds / WALK_SHARE)
        if pending_bytes is None or token != self.syncs_started:
            return None
        plan = self.early_sync(pending_bytes, now)
        if plan is not None:
            self.early_pending = pending_bytes
        return plan

    def early_sync(self, pending_bytes: int, now: float) -> EarlySync | None:
        """Whether the pending bytes call for a sync now (pure: the caller starts it)."""
        if self.max_pending_upload <= 0 or self.running or self.closing:
            return None
        if now < self.hold_early_until:
            return None
        rate, source = self.rate()
        estimate = pending_bytes / rate
        if estimate <= self.max_pending_upload:
            return None
        due_in = self.next_periodic - now if self.next_periodic != float("inf") else None
        return EarlySync(
            pending_bytes=pending_bytes,
            upload_rate=rate,
            rate_source=source,
            estimate=estimate,
            threshold=self.max_pending_upload,
            periodic_due_in=due_in,
        )

    def rate(self) -> tuple[float, str]:
        """The upload rate to size pending bytes with, and where it comes from: the last
        sizeable sync's, else :data:`ASSUMED_UPLOAD_RATE` (slow on purpose: an early sync
        too soon, a reserve too long, rather than a final checkpoint cut off)."""
        if self.upload_rate:
            return self.upload_rate, "measured"
        return float(ASSUMED_UPLOAD_RATE), "assumed"

    def reserve(self, budget: float, pending_bytes: int) -> ReservePlan:
        """At least the minimum reserve; more when the last sync took longer, or when the
        bytes changed since the last commit would take longer at the upload rate (the
        measured one, else the assumed one: a large state written before the first sync
        needs its time too). Never more than 80% of ``budget`` (the time left): the job
        needs time to stop."""
        rate, source = self.rate()
        estimate = pending_bytes / rate
        wanted = max(self.min_reserve, 2.0 * self.last_sync_seconds, 1.5 * estimate)
        return ReservePlan(
            reserve=min(wanted, (1.0 - JOB_SHARE) * max(budget, 0.0)),
            pending_bytes=pending_bytes,
            upload_rate=rate,
            rate_source=source,
            last_sync_seconds=self.last_sync_seconds,
        )
