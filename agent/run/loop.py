"""The run loop: claim, restore, start, supervise, finish.

Every slow step (the store check and attempt claim, the notice-source probe, the restore,
each sync) runs in a worker thread and reports back as an event on one queue; the loop
thread only waits on that queue (at most half a second at a time) and acts. A signal is
stamped in its handler, when it arrives, so a SIGTERM at any moment gets its deadline
from its arrival: before the job starts, the agent leaves at once (nothing to save; the
stored checkpoints are as they were); after, it stops the job and commits in time.

    claim ──► restore (+ probe) ──► start job ──► periodic / requested syncs
                                        │
       notice (IMDS, SIGTERM)           ▼
            notice file ──► stop signal ──► wait (deadline - reserve) ──► SIGKILL tree
            ──► final sync ──► exit 75 (79 when it did not commit)
                                        │
        job exits by itself ──► final sync ──► exit with the job's code
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from checkpoint.errors import CheckpointError, Superseded
from checkpoint.sync import RestoreResult, SyncResult

from .. import logs
from ..config import ConfigError, Settings
from ..notices import INTERRUPTION, REBALANCE, Notice, NoticeBoard, NoticeSource, sigterm_notice
from ..supervisor import SpawnError
from . import endings, signals
from .events import (
    Event,
    IdentityKnown,
    NoticeReceived,
    SignalReceived,
    StartupDone,
    StartupFailed,
    SyncDone,
    SyncFailed,
)
from .jobenv import JobFiles, job_environ
from .parts import Checkpoints, Job, Parts
from .report import log_restore, log_sync, rounded
from .scheduler import Interruption, SyncScheduler
from .signals import Meaning

log = logs.get_logger()


class RunLoop:
    def __init__(self, settings: Settings, parts: Parts, files: JobFiles) -> None:
        self.s = settings
        self.parts = parts
        self.files = files
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.table = signals.signal_table(settings.sync_signal)
        self.scheduler = SyncScheduler(settings.sync_interval, settings.upload_reserve)
        self.board = NoticeBoard()
        self.attempt = 0
        self.ckpt: Checkpoints | None = None
        self.job: Job | None = None
        self.interruption: Interruption | None = None
        self.stopped_by: signal.Signals | None = None  # Ctrl-C etc. before the job started
        self.superseded: Superseded | None = None
        self.last_sync: SyncResult | BaseException | None = None
        self.workers: list[threading.Thread] = []
        self._sync_thread: threading.Thread | None = None
        self._done: dict[str, Any] = {}
        self._failed: StartupFailed | None = None
        self._stop_sources = threading.Event()

    # -- the main sequence --------------------------------------------------------------

    def run(self) -> int:
        own = self.parts.own_signals
        restore_handlers = signals.install(self.table, self.on_signal) if own else None
        for ev in signals.early_signals():
            self.events.put(ev)
        try:
            return self._main()
        finally:
            if self.job is not None and self.job.running:
                self.job.kill_tree()  # only after a bug: the job must not outlive us unsupervised
            self._stop_sources.set()
            if self.job is not None:
                self.job.close_output(endings.OUTPUT_DRAIN_SECONDS)
            if restore_handlers is not None:
                restore_handlers()

    def _main(self) -> int:
        self.start_worker("claim", self.parts.claim)
        if not self.await_steps("claim"):
            return endings.startup_cut(self, self._failed)
        self.attempt, self.ckpt = self._done["claim"]
        logs.bind_static(attempt=self.attempt)
        s = self.s
        log.info(
            "agent.start",
            command=list(s.command),
            store=s.checkpoint_uri,
            checkpoint_dir=str(s.checkpoint_dir),
            job_id_source=s.job_id_source,
            batch_attempt=s.batch_attempt,
            sync_interval=s.sync_interval,
            grace_period=s.grace_period,
            upload_reserve=rounded(s.upload_reserve),
            pid=os.getpid(),
        )
        self.start_worker("sources", lambda: self.parts.sources(self._identity))
        self.start_worker("restore", self.ckpt.restore)
        if not self.await_steps("sources", "restore"):
            return endings.startup_cut(self, self._failed)
        restored: RestoreResult = self._done["restore"]
        log_restore(restored)
        seq = restored.manifest.sequence if restored.manifest else None
        self.files.write_status(seq, 0.0, "restore")
        self.job = self.parts.make_job(job_environ(s, self.files, self.attempt, seq))
        try:
            pid = self.job.start()
        except SpawnError as exc:
            log.error("child.spawn_failed", error=str(exc), exit_code=exc.exit_code)
            return exc.exit_code
        log.info("child.started", child_pid=pid, reaper=self.job.reaper)
        self._start_sources(self._done["sources"])
        self.scheduler.schedule(time.monotonic())
        code = self._supervise()
        if self.interruption is not None and code is None:
            return endings.finish_interrupted(self)
        if code is None:
            return endings.finish_superseded(self)
        return endings.finish_exited(self, code)

    def _supervise(self) -> int | None:
        """The job's exit code, or None once an interruption or a newer attempt ends it."""
        assert self.job is not None
        while True:
            code = self.job.reap()
            if code is not None:
                return code
            if self.interruption is not None or self.superseded is not None:
                return None
            now = time.monotonic()
            if self.scheduler.due(now):
                self.request_sync("periodic")
            self.pump(self.scheduler.wait_time(now))

    # -- start-up workers -----------------------------------------------------------------

    def start_worker(self, step: str, work: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                value = work()
            except BaseException as exc:
                self.events.put(StartupFailed(step, exc))
                return
            self.events.put(StartupDone(step, value))

        self.spawn_worker(run, step)

    def spawn_worker(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self.workers.append(thread)
        thread.start()
        return thread

    def await_steps(self, *steps: str) -> bool:
        """Serve events until the steps are done: False when start-up must stop instead."""
        while True:
            if self.interruption or self.stopped_by or self._failed:
                return False
            if all(step in self._done for step in steps):
                return True
            self.pump(0.5)

    def _identity(self, fields: dict[str, Any]) -> None:
        self.events.put(IdentityKnown(fields))

    def _start_sources(self, sources: tuple[NoticeSource, ...]) -> None:
        def post(notice: Notice) -> None:
            self.events.put(NoticeReceived(notice, time.monotonic()))

        for source in sources:

            def run(source: NoticeSource = source) -> None:
                try:
                    source.run(post, self._stop_sources)
                except Exception as exc:  # a broken source must never take the job down
                    log.error("notice_source.crashed", source=source.name, error=repr(exc))

            threading.Thread(target=run, name=f"notice-{source.name}", daemon=True).start()

    # -- events -------------------------------------------------------------------------

    def on_signal(self, sig: signal.Signals, at: float) -> None:
        """In the signal handler: forward the job's signals at once, queue the rest."""
        forwarded = False
        if self.table.get(sig) is Meaning.FORWARD and self.job is not None and self.job.running:
            self.job.send(sig)  # at once: a forwarded signal must not wait for a sync
            forwarded = True
        self.events.put(SignalReceived(sig, at, forwarded))

    def pump(self, timeout: float) -> None:
        with contextlib.suppress(queue.Empty):
            self.handle(self.events.get(timeout=max(timeout, 0.0)))

    def drain(self) -> None:
        while True:
            try:
                self.handle(self.events.get_nowait())
            except queue.Empty:
                return

    def handle(self, ev: Event) -> None:
        match ev:
            case SignalReceived(sig, at, forwarded):
                self._on_signal_event(sig, at, forwarded)
            case NoticeReceived(notice, at):
                self.on_notice(notice, at)
            case SyncDone() | SyncFailed():
                self._on_sync_end(ev)
            case StartupDone(step, value):
                self._done[step] = value
            case StartupFailed("sources", error) if not isinstance(error, ConfigError):
                log.error("notice_source.failed", error=repr(error), notices="SIGTERM only")
                self._done["sources"] = ()
            case StartupFailed():
                self._failed = ev
            case IdentityKnown(fields):
                logs.bind_static(**fields)

    def _on_signal_event(self, sig: signal.Signals, at: float, forwarded: bool) -> None:
        meaning = self.table.get(sig)
        if meaning is Meaning.NOTICE:
            wall = datetime.now(UTC) - timedelta(seconds=time.monotonic() - at)
            self.on_notice(sigterm_notice(self.s.grace_period, wall), at)
        elif meaning is Meaning.SYNC:
            if self.job is None:
                log.info("sync.ignored", by=sig.name, why="the job has not started")
            else:
                log.info("sync.requested", by=sig.name)
                self.request_sync("requested")
        elif meaning is Meaning.FORWARD and forwarded:
            log.info("signal.forwarded", signal=sig.name)
        elif meaning is Meaning.FORWARD and self.job is None and sig in signals.STOP_BEFORE_START:
            log.warning("agent.stopping", signal=sig.name, why="received before the job started")
            self.stopped_by = self.stopped_by or sig
        elif meaning is Meaning.FORWARD:
            log.info("signal.not_forwarded", signal=sig.name, why="no job running")

    def on_notice(self, notice: Notice, at: float) -> None:
        fields: dict[str, Any] = {"source": notice.source, "action": notice.action}
        if notice.kind == INTERRUPTION:
            new = Interruption.arrived(notice, at, self.s.grace_period)
            fields.update(
                deadline=notice.deadline.isoformat() if notice.deadline else None,
                seconds_left=rounded(new.seconds_left(time.monotonic())),
            )
            if self.interruption is None:
                log.warning("notice.interruption", **fields)
            elif new.deadline < self.interruption.deadline:
                log.warning("notice.deadline_moved", **fields, why="a later notice is more urgent")
                self.files.write_notice(notice)
            else:
                log.debug("notice.repeat", **fields)
                return
            self.interruption = new
            return
        if not self.board.accept(notice):
            log.debug("notice.repeat", **fields)
            return
        fields["deadline"] = notice.deadline.isoformat() if notice.deadline else None
        if notice.kind == REBALANCE:
            log.warning("notice.rebalance", **fields, action_taken="checkpoint now, keep running")
            self.request_sync("rebalance")
        else:
            log.warning("notice.scheduled", **fields, detail=notice.detail)
            self.request_sync("scheduled-event")

    # -- syncs --------------------------------------------------------------------------

    def request_sync(self, reason: str) -> None:
        if self.superseded is not None or self.job is None:
            return
        start = self.scheduler.request(reason)
        if start is not None:
            self.start_sync(start)

    def start_sync(self, reason: str) -> None:
        ckpt, keep = self.ckpt, self.s.checkpoint_keep
        assert ckpt is not None

        def run() -> None:
            started = time.time()
            try:
                result = ckpt.sync_once(reason)
            except Exception as exc:
                self.events.put(SyncFailed(reason, exc))
                return
            self.events.put(SyncDone(result, started))
            if result.sequence is not None and keep:
                try:
                    ckpt.prune(keep)
                except Exception as exc:  # the commit stands; old ones go next time
                    log.warning("sync.prune_failed", error=str(exc), error_type=type(exc).__name__)

        self._sync_thread = self.spawn_worker(run, "sync")

    @property
    def syncing(self) -> bool:
        return self._sync_thread is not None and self._sync_thread.is_alive()

    def _on_sync_end(self, ev: SyncDone | SyncFailed) -> None:
        result: SyncResult | None = None
        if isinstance(ev, SyncDone):
            result = self.last_sync = ev.result
            log_sync(ev.result)
            self.files.write_status(self.restorable(), ev.started, ev.result.reason)
        else:
            self.last_sync = exc = ev.error
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
        again = self.scheduler.finished(time.monotonic(), result)
        if again is not None:
            self.start_sync(again)

    def restorable(self) -> int | None:
        base = self.ckpt.base if self.ckpt is not None else None
        return base.sequence if base is not None else None

    # -- the clock after a notice -----------------------------------------------------------

    def seconds_left(self) -> float | None:
        """Until the interruption's deadline (None when there is none), monotonic."""
        if self.interruption is None:
            return None
        return self.interruption.seconds_left(time.monotonic())

    def left(self) -> float:
        return max(self.seconds_left() or 0.0, 0.0)

    @property
    def abandoned_work(self) -> bool:
        """A worker still runs (a restore or an upload cut short by the deadline): the
        process must exit without waiting for it."""
        return any(t.is_alive() for t in self.workers)
