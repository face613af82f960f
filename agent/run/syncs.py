"""The sync worker: one sync at a time, when the scheduler says; each runs in its own
thread and reports back as a ``SyncDone`` or ``SyncFailed`` event. Between syncs, a walk
of the dir (in its own thread too) counts the pending bytes and reports a
``PendingMeasured``: too many, and an early sync starts (``sync.early``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from checkpoint.engine.save.sync import SyncResult
from checkpoint.errors import CheckpointError, Superseded

from .. import logs
from ..checkpoint_view import Checkpoints
from .events import Event, PendingMeasured, SyncDone, SyncFailed
from .jobenv import JobFiles
from .report import log_sync
from .scheduler import EARLY, SyncScheduler

log = logs.get_logger()


class Syncs:
    def __init__(
        self,
        scheduler: SyncScheduler,
        files: JobFiles,
        keep: int,
        post: Callable[[Event], None],
        spawn: Callable[[Callable[[], None], str], threading.Thread],
    ) -> None:
        self.scheduler = scheduler
        self.files = files
        self.keep = keep
        self._post = post
        self._spawn = spawn
        self.ckpt: Checkpoints | None = None  # set once the attempt is claimed
        self.superseded: Superseded | None = None
        #: what the last sync to end gave: its result, or what it raised
        self.last: SyncResult | BaseException | None = None
        self._thread: threading.Thread | None = None
        self._walk_failed: str | None = None  # the last walk's error, logged once

    def attach(self, ckpt: Checkpoints) -> None:
        """The attempt is claimed: syncs go to ``ckpt``."""
        self.ckpt = ckpt

    def forget_last(self) -> None:
        """Before the final sync: :attr:`last` will be its result, not an earlier one's."""
        self.last = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def restorable(self) -> int | None:
        base = self.ckpt.base if self.ckpt is not None else None
        return base.sequence if base is not None else None

    def request(self, reason: str) -> None:
        if self.superseded is not None or self.ckpt is None:
            return
        start = self.scheduler.request(reason)
        if start is not None:
            self.start(start)

    def start(self, reason: str) -> None:
        ckpt, keep, post = self.ckpt, self.keep, self._post
        assert ckpt is not None

        def run() -> None:
            started = time.time()
            try:
                result = ckpt.sync_once(reason)
            except Exception as exc:
                post(SyncFailed(reason, exc))
                return
            if result.sequence is not None and keep:
                try:
                    ckpt.prune(keep)
                except Exception as exc:  # the commit stands; old ones go next time
                    log.warning("sync.prune_failed", error=str(exc), error_type=type(exc).__name__)
            # Last: a request that comes while this thread lives is queued by the scheduler
            # and served when this event is handled; posted before the prune, it was lost.
            post(SyncDone(result, started))

        self._thread = self._spawn(run, "sync")

    def ended(self, ev: SyncDone | SyncFailed) -> None:
        """On the loop thread: log, publish the status, and start what is due next."""
        if self._thread is not None:  # its event is its last act: let it end first
            self._thread.join(1.0)
        result: SyncResult | None = None
        if isinstance(ev, SyncDone):
            result = self.last = ev.result
            log_sync(ev.result, self.restorable())
            self.files.write_status(self.restorable(), ev.started, ev.result.reason)
        else:
            self.last = exc = ev.error
            if isinstance(exc, Superseded):
                log.error("sync.superseded", error=str(exc))
                self.superseded = exc
                self.scheduler.close()
                return
            if not isinstance(exc, (CheckpointError, OSError)):
                log.error("agent.bug", error=repr(exc), where="sync")
            log.error(
                "sync.final_failed" if self.scheduler.closing else "sync.failed",
                reason=ev.reason,
                error=str(exc),
                error_type=type(exc).__name__,
                restorable=self.restorable(),
            )
        now = time.monotonic()
        early_pending = self.scheduler.early_pending
        again = self.scheduler.finished(now, result)
        if result is not None and early_pending and self.scheduler.hold_early_until > now:
            log.info(
                "sync.early_overcounted",
                pending_bytes=early_pending,
                bytes_uploaded=result.bytes_uploaded,
                why="the walk counted whole files; the sync sent only their changed chunks",
                next_early_after=round(self.scheduler.hold_early_until - now, 3),
            )
        if again is not None:
            self.start(again)

    # -- early syncs ------------------------------------------------------------------------

    def measure(self) -> None:
        """Walk the dir for the pending bytes in a thread of its own (the loop never waits
        on a walk). Not one of the loop's workers: a walk is never work to wait for."""
        ckpt, post = self.ckpt, self._post
        if ckpt is None or self.superseded is not None:
            self.scheduler.never_measure()
            return
        token = self.scheduler.measuring_started()

        def walk() -> None:
            started = time.monotonic()
            try:
                found = ckpt.pending_bytes()
            except Exception as exc:  # measuring is an optimisation: it never stops the job
                post(PendingMeasured(token, None, time.monotonic() - started, repr(exc)))
                return
            post(PendingMeasured(token, found, time.monotonic() - started))

        threading.Thread(target=walk, name="cadence-walk", daemon=True).start()

    def measured(self, ev: PendingMeasured) -> None:
        """On the loop thread: start an early sync when the pending bytes call for one."""
        if ev.error is not None and ev.error != self._walk_failed:
            log.warning("sync.pending_unknown", error=ev.error, action="no early sync this time")
        self._walk_failed = ev.error
        now = time.monotonic()
        plan = self.scheduler.measured(now, ev.token, ev.pending_bytes, ev.seconds)
        log.debug(
            "sync.pending",
            pending_bytes=ev.pending_bytes,
            walk_seconds=round(ev.seconds, 3),
            next_walk_in=round(self.scheduler.next_measure - now, 3),
        )
        if plan is None:
            return
        log.info(
            "sync.early",
            **plan.log_fields(),
            walk_seconds=round(ev.seconds, 3),
            sync_reason=EARLY,
        )
        self.request(EARLY)
