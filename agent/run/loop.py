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
import threading
import time
from collections.abc import Callable
from typing import Any

from checkpoint.errors import Superseded

from .. import logs
from ..checkpoint_view import Checkpoints
from ..config import Settings
from ..notices import Notice
from ..process.signals import Sig
from ..process.spawn import SpawnError
from ..timeline.record import AttemptRecord
from . import arrivals, endings, interrupted
from . import meanings as signals
from .arrivals import Arrived
from .events import (
    Claimed,
    Event,
    IdentityKnown,
    NoticeReceived,
    PendingMeasured,
    Restored,
    SignalReceived,
    SourcesReady,
    StartupFailed,
    SyncDone,
    SyncFailed,
)
from .jobenv import JobFiles, job_environ
from .meanings import Meaning
from .parts import Job, Parts
from .report import log_restore, log_start
from .scheduler import Interruption, SyncScheduler
from .sources import start_sources
from .syncs import Syncs
from .workers import StartupSteps, Workers

log = logs.get_logger()


class RunLoop:
    def __init__(self, settings: Settings, parts: Parts, files: JobFiles) -> None:
        self.s = settings
        self.parts = parts
        self.files = files
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.table = signals.signal_table(settings.sync_signal)
        self.scheduler = SyncScheduler(
            settings.sync_interval, settings.upload_reserve, settings.max_pending_upload
        )
        self.arrived = Arrived()  # what signals and notices did: written by arrivals only
        self.attempt = 0
        self.ckpt: Checkpoints | None = None
        self.record = AttemptRecord(0, None)  # this attempt's, once it is claimed
        self.job: Job | None = None
        self.workers = Workers(self.events.put)
        self.steps = StartupSteps()
        self.syncs = Syncs(
            self.scheduler, files, settings.checkpoint_keep, self.events.put, self.workers.spawn
        )
        #: why start-up failed, in one line for stderr (the JSON event has it too)
        self.startup_error: str | None = None
        self._stop_sources = threading.Event()

    # -- the main sequence --------------------------------------------------------------

    def run(self) -> int:
        own = self.parts.own_signals
        restore_handlers = signals.install(self.table, self.on_signal) if own else None
        for ev in signals.early_signals():
            self.events.put(ev)
        try:
            code = self._main()
            endings.record_end(self, code)
            return code
        finally:
            if self.job is not None and self.job.running:
                self.job.kill_tree()  # only after a bug: the job must not outlive us unsupervised
            self._stop_sources.set()
            if self.job is not None:
                self.job.close_output(endings.OUTPUT_DRAIN_SECONDS)
            if restore_handlers is not None:
                restore_handlers()

    def _main(self) -> int:
        # The first line of every run, before any store call: a store that never answers
        # is then not silence (agent.start follows, with the attempt, once it has answered).
        log.info(
            "agent.starting",
            store=self.s.checkpoint_uri,
            startup_timeout=self.s.startup_timeout,
            pid=os.getpid(),
        )
        steps = self.steps
        self.workers.step("claim", self.parts.claim, lambda got: Claimed(*got))
        if not self._await_startup(lambda: steps.claimed is not None):
            return endings.startup_cut(self, steps.failed)
        assert steps.claimed is not None
        self.attempt, self.ckpt = steps.claimed.attempt, steps.claimed.ckpt
        self.syncs.attach(self.ckpt)
        self.record = self.parts.record(self.attempt)
        logs.bind_static(attempt=self.attempt)
        log_start(self.s, os.getpid())
        self.workers.step("sources", lambda: self.parts.sources(self._identity), SourcesReady)
        self.workers.step("restore", self.ckpt.restore, Restored)
        if not self._await_startup(lambda: steps.ready):
            return endings.startup_cut(self, steps.failed)
        restored, sources = steps.restored, steps.sources
        assert restored is not None and sources is not None
        log_restore(restored)
        self.record.restored(restored, time.time())
        seq = restored.manifest.sequence if restored.manifest else None
        self.files.write_status(seq, 0.0, "restore")
        env = job_environ(self.s, self.files, self.attempt, seq, restored.cut_off_kept)
        job = self.parts.make_job(env)
        try:
            pid = job.start()
        except SpawnError as exc:
            log.error("child.spawn_failed", error=str(exc), exit_code=exc.exit_code)
            self.startup_error = str(exc)
            return exc.exit_code
        self.job = job  # from here on the signal handler forwards at once
        self.ckpt.attach(job.pids, self.files.write_frozen, self.files.write_declared)
        log.info("child.started", child_pid=pid, reaper=job.reaper)
        for sig in self.arrived.held:
            job.send(sig)
            log.info("signal.forwarded", signal=sig.name, held=True)
        self.arrived.held.clear()
        start_sources(sources, self._post_notice, self._stop_sources)
        self.scheduler.schedule(time.monotonic())
        code = self._supervise()
        if self.interruption is not None and code is None:
            return interrupted.finish_interrupted(self)
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
                self.syncs.request("periodic")
            elif self.scheduler.measure_due(now):
                self.syncs.measure()  # may start an early sync when it reports
            self.pump(self.scheduler.wait_time(now))

    def _await_startup(self, done: Callable[[], bool]) -> bool:
        """Serve events until the steps are ``done``: False when start-up must stop instead."""
        while True:
            if done():
                self.drain()  # a signal already queued: do not start a job only to stop it
            if self.interruption or self.arrived.stopped_by or self.steps.failed:
                return False
            if done():
                return True
            self.pump(0.5)

    def _identity(self, fields: dict[str, Any]) -> None:
        self.events.put(IdentityKnown(fields))

    def _post_notice(self, notice: Notice) -> None:
        self.events.put(NoticeReceived(notice, time.monotonic()))

    def announce(self, notice: Notice) -> None:
        """An interruption: a group's agent tells the other nodes (in a worker)."""
        if self.parts.announce is not None:
            announce = self.parts.announce
            self.workers.spawn(lambda: announce(notice), "group-notice")

    # -- events -------------------------------------------------------------------------

    def on_signal(self, sig: Sig, at: float) -> None:
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
                arrivals.on_signal(self, sig, at, forwarded)
            case NoticeReceived(notice, at):
                arrivals.on_notice(self, notice, at)
            case SyncDone(result, started):
                self.syncs.ended(ev)
                self.record.synced(result, started, self.ckpt.base if self.ckpt else None)
            case SyncFailed():
                self.syncs.ended(ev)
                self.record.sync_failed()
            case PendingMeasured() if self._supervising:
                self.syncs.measured(ev)
            case PendingMeasured():  # the run is ending: the final sync commits it all
                self.scheduler.measure_dropped()
            case Claimed() | SourcesReady() | Restored() | StartupFailed():
                self.steps.take(ev)
            case IdentityKnown(fields):
                logs.bind_static(**fields)
                self.record.identity(fields)

    @property
    def _supervising(self) -> bool:
        """The job runs and nothing is ending it: early syncs may start."""
        running = self.job is not None and self.job.running
        return running and self.interruption is None and self.superseded is None

    @property
    def interruption(self) -> Interruption | None:
        return self.arrived.interruption

    @property
    def superseded(self) -> Superseded | None:
        return self.syncs.superseded
