"""The run loop: restore, start the job, checkpoint while it runs, act on the first notice.

Everything that happens asynchronously (a signal, a notice from a source thread, a sync
finishing in its worker thread) becomes an event on one queue, handled by the main thread
one at a time. ``queue.SimpleQueue.put`` is reentrant, so signal handlers may post to it.

    start ──► restore ──► run child ──► periodic / requested syncs
                              │
     notice (IMDS, SIGTERM)   ▼
          notice file ──► stop signal ──► wait (deadline - reserve) ──► SIGKILL tree
          ──► final sync ──► exit 75
                              │
      child exits by itself ──► final sync ──► exit with the child's code
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from checkpoint.errors import CheckpointError, LocalWriteError, StoreError, Superseded
from checkpoint.freeze import Freezer, Frozen
from checkpoint.savepoints import consistent_sync
from checkpoint.store import Store, make_private_dirs
from checkpoint.sync import Checkpointer, JobStore, RestoreResult, SyncResult

from . import batch, childio, early, logs, resources
from .config import ConfigError, Settings
from .imds import ImdsClient, ImdsSource, ImdsUnavailable, looks_like_ec2
from .notices import (
    INTERRUPTION,
    REBALANCE,
    Notice,
    NoticeBoard,
    NoticeSource,
    sigterm_notice,
    write_notice_file,
    write_private_file,
)
from .supervisor import FORWARDED_SIGNALS, Child, SpawnError, become_subreaper

EXIT_USAGE = 2
EXIT_STORE_UNAVAILABLE = 69
#: EX_CANTCREAT: the checkpoint could not be restored into the local dir (disk full, ...)
EXIT_CANT_WRITE = 73
EXIT_CHECKPOINT_FAILED = 74
EXIT_INTERRUPTED = 75
EXIT_SUPERSEDED = 76

#: at most this long to read the job's last output, and to ship the last log events
OUTPUT_DRAIN_SECONDS = 2.0
LOG_FLUSH_SECONDS = 10.0

#: What each signal to the agent becomes (tini's table, plus our two meanings).
SIGNAL_TABLE: dict[signal.Signals, str] = {
    signal.SIGTERM: "notice",
    signal.SIGUSR1: "sync",
    signal.SIGCHLD: "reap",
    **{sig: "forward" for sig in FORWARDED_SIGNALS},
}

log = logs.get_logger()
#: a sync must upload at least this much for its rate to size the upload reserve
_RATE_SAMPLE_BYTES = 4 << 20
#: a sync waits this long for the job to finish a save (save points); the final one less
SAVE_WAIT_SECONDS = 60.0
FINAL_SAVE_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class Event:
    kind: str  # "signal", "notice", "synced", "sync-failed"
    payload: Any = None


class Runner:
    def __init__(
        self, settings: Settings, store: Store, sources: tuple[NoticeSource, ...] = ()
    ) -> None:
        self.s = settings
        self.store = store
        self.sources = sources
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.board = NoticeBoard()
        self.child: Child | None = None
        self.output: childio.ChildOutput | None = None
        self.ckpt: Checkpointer | None = None
        self.attempt = 0
        self.interruption: Notice | None = None
        self.superseded: Superseded | None = None
        self._stop_sources = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._sync_again: str | None = None
        self._closing = False
        self._sync_outcome: SyncResult | BaseException | None = None
        #: a sync thread was left running at a deadline: the process must not wait for it
        self.abandoned_work = False
        self._last_sync_seconds = 0.0
        self._upload_rate: float | None = None  # bytes/s of the last sizeable sync
        self._next_periodic = float("inf")
        self._runtime = Path(tempfile.mkdtemp(prefix="spot-agent-"))
        self.notice_file = self._runtime / "notice.json"
        self.status_file = self._runtime / "status.json"
        self.freezer = Freezer(settings.checkpoint_dir)
        self._status: dict[str, Any] = {}
        self._status_lock = threading.Lock()  # the sync thread writes "frozen"

    # -- entry --------------------------------------------------------------------------

    def run(self) -> int:
        old_handlers = self._install_signals()
        try:
            return self._run()
        finally:
            if self.child is not None and self.child.running:
                # Only after a bug in the agent: its job must not outlive it unsupervised.
                self.child.kill_tree()
            self._stop_sources.set()
            self._drain_output()
            logs.shutdown(self._log_flush_seconds())
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if self.ckpt is not None:
                self.ckpt.close()
            if not self.abandoned_work:  # a sync thread left running may still read it
                self.freezer.close()
            self.store.close()
            shutil.rmtree(self._runtime, ignore_errors=True)

    def _run(self) -> int:
        s = self.s
        prepare_checkpoint_dir(s.checkpoint_dir)
        logs.bind_static(job_id=s.job_id)
        logs.bind_static(
            batch_job_queue=s.batch_job_queue, batch_compute_environment=s.batch_compute_environment
        )
        try:
            self.store.check()
            job = JobStore(self.store, s.job_id)
            self.attempt = job.claim_attempt(
                {"host": socket.gethostname(), "batch_attempt": s.batch_attempt}
            )
        except StoreError as exc:
            log.error("store.unavailable", store=s.checkpoint_uri, error=str(exc))
            return EXIT_STORE_UNAVAILABLE
        logs.bind_static(attempt=self.attempt)
        log.info(
            "agent.start",
            command=list(s.command),
            store=s.checkpoint_uri,
            checkpoint_dir=str(s.checkpoint_dir),
            job_id_source=s.job_id_source,
            batch_attempt=s.batch_attempt,
            sync_interval=s.sync_interval,
            pid=os.getpid(),
        )
        self.sources = (*self.sources, *self._imds_sources())
        self.ckpt = Checkpointer(job, s.checkpoint_dir, attempt=self.attempt)
        self._reset_freezer(create_lock=False)  # a killed agent's freeze: space to restore
        try:
            restored = self.ckpt.restore()
        except StoreError as exc:
            log.error("restore.failed", store=s.checkpoint_uri, error=str(exc))
            return EXIT_STORE_UNAVAILABLE
        except (LocalWriteError, OSError) as exc:
            # The store is fine; this machine's disk is not (full, read-only, ...). The
            # job's directory keeps what it had: restore stages and verifies first.
            log.error(
                "restore.failed",
                checkpoint_dir=str(s.checkpoint_dir),
                error=str(exc),
                exit_code=EXIT_CANT_WRITE,
                action="the stored checkpoint is intact; free space or fix the checkpoint dir",
            )
            return EXIT_CANT_WRITE
        self._log_restore(restored)
        self._reset_freezer(create_lock=True)  # the job's lock file, after a clean restore
        self._write_status(
            restored.manifest.sequence if restored.manifest else None, 0.0, "restore"
        )
        if self._early_interruption():
            return self._finish_interrupted(child_ran=False)

        seq = restored.manifest.sequence if restored.manifest else None
        self.output = childio.ChildOutput(s.child_output)
        streams = self.output.child_streams()
        self.child = Child(
            s.command,
            env=self._child_env(seq),
            reaper=become_subreaper(),
            stdout=streams.get("stdout"),
            stderr=streams.get("stderr"),
        )
        try:
            pid = self.child.start()
        except SpawnError as exc:
            self.output.abandon()
            log.error("child.spawn_failed", error=str(exc), exit_code=exc.exit_code)
            return exc.exit_code
        self.output.start()
        log.info("child.started", child_pid=pid, reaper=self.child.reaper)
        resources.start_sampler(self.child.tree, s.sample_interval, self._stop_sources)
        self._start_sources()
        self._schedule_periodic()
        outcome = self._supervise()
        if not isinstance(outcome, Notice):
            self._drain_output()  # the job's last lines before the agent's closing events
        if isinstance(outcome, Notice):
            return self._finish_interrupted(child_ran=True)
        if self.superseded is not None:
            return self._finish_superseded()
        return self._finish_exited(outcome)

    # -- signals and events -------------------------------------------------------------

    def _install_signals(self) -> dict[signal.Signals, Any]:
        old: dict[signal.Signals, Any] = {}
        for sig, action in SIGNAL_TABLE.items():
            old[sig] = signal.signal(sig, self._on_signal)
            if action == "reap":
                signal.siginterrupt(sig, False)
        if early.received is not None:  # a SIGTERM came while the agent was starting
            received = datetime.fromtimestamp(early.received, UTC)
            early.received = None
            self.events.put(Event("notice", sigterm_notice(self.s.grace_period, received)))
        return old

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if SIGNAL_TABLE.get(sig) == "forward" and self.child is not None:
            self.child.send(sig)  # at once: a forwarded signal must not wait for a sync
        self.events.put(Event("signal", sig))

    def _imds_sources(self) -> tuple[NoticeSource, ...]:
        """The metadata-service source, if ``--imds`` and the machine call for one."""
        s = self.s
        if s.imds == "off":
            return ()
        if s.imds == "auto" and not s.imds_endpoint_set and not looks_like_ec2():
            log.info(
                "imds.skipped",
                why="not on EC2 and AWS_EC2_METADATA_SERVICE_ENDPOINT unset",
                notices="SIGTERM only",
            )
            return ()
        client = ImdsClient(s.imds_endpoint)
        reason = client.probe()
        if reason is not None:
            if s.imds == "on":
                raise ConfigError(
                    "--imds (SPOT_AGENT_IMDS)",
                    f"on, but the metadata service at {s.imds_endpoint} cannot be used: {reason}",
                )
            log.warning(
                "imds.unavailable", endpoint=s.imds_endpoint, reason=reason, notices="SIGTERM only"
            )
            return ()
        identity = {}
        for field, path in (
            ("instance_id", "instance-id"),
            ("instance_type", "instance-type"),
            ("availability_zone", "placement/availability-zone"),
        ):
            try:
                identity[field] = client.get(path)
            except ImdsUnavailable:
                identity[field] = None
        logs.bind_static(**identity)
        log.info("imds.polling", endpoint=s.imds_endpoint, interval=s.imds_interval)
        return (ImdsSource(client, interval=s.imds_interval),)

    def _post(self, notice: Notice) -> None:
        self.events.put(Event("notice", notice))

    def _start_sources(self) -> None:
        for source in self.sources:
            threading.Thread(
                target=self._run_source, args=(source,), name=f"notice-{source.name}", daemon=True
            ).start()

    def _run_source(self, source: NoticeSource) -> None:
        try:
            source.run(self._post, self._stop_sources)
        except Exception as exc:  # a broken source must never take the job down
            log.error("notice_source.crashed", source=source.name, error=repr(exc))

    def _handle(self, ev: Event) -> None:
        if ev.kind == "signal":
            action = SIGNAL_TABLE.get(ev.payload)
            if action == "notice":
                self._on_notice(sigterm_notice(self.s.grace_period))
            elif action == "sync":
                log.info("sync.requested", by="SIGUSR1")
                self._start_sync("requested")
            elif action == "forward":
                log.info("signal.forwarded", signal=ev.payload.name)
        elif ev.kind == "notice":
            self._on_notice(ev.payload)
        elif ev.kind in ("synced", "sync-failed"):
            self._on_sync_done(ev)

    def _on_notice(self, notice: Notice) -> None:
        if not self.board.accept(notice):
            log.debug("notice.repeat", source=notice.source, action=notice.action)
            return
        fields = {
            "source": notice.source,
            "action": notice.action,
            "deadline": notice.deadline.isoformat() if notice.deadline else None,
            "seconds_left": _round(notice.seconds_left()),
        }
        if notice.kind == INTERRUPTION:
            if self.interruption is not None:
                log.warning("notice.deadline_moved", **fields, why="a later notice is more urgent")
                write_notice_file(self.notice_file, notice)
            else:
                log.warning("notice.interruption", **fields)
            self.interruption = notice
        elif notice.kind == REBALANCE:
            log.warning("notice.rebalance", **fields, action_taken="checkpoint now, keep running")
            self._start_sync("rebalance")
        else:
            log.warning("notice.scheduled", **fields, detail=notice.detail)
            self._start_sync("scheduled-event")

    def _early_interruption(self) -> bool:
        """A SIGTERM during restore: do not start a job that would be stopped at once."""
        while True:
            try:
                self._handle(self.events.get_nowait())
            except queue.Empty:
                return self.interruption is not None

    # -- supervision --------------------------------------------------------------------

    def _supervise(self) -> int | Notice:
        assert self.child is not None
        while True:
            code = self.child.reap()
            if code is not None:
                return code
            if self.interruption is not None:
                return self.interruption
            if self.superseded is not None:
                return 0
            timeout = min(max(self._next_periodic - time.monotonic(), 0.0), 0.5)
            with contextlib.suppress(queue.Empty):
                self._handle(self.events.get(timeout=timeout))
            if time.monotonic() >= self._next_periodic:
                self._start_sync("periodic")

    def _pump(self, timeout: float) -> None:
        with contextlib.suppress(queue.Empty):
            self._handle(self.events.get(timeout=max(timeout, 0.0)))

    # -- syncs --------------------------------------------------------------------------

    def _schedule_periodic(self) -> None:
        if self.s.sync_interval > 0:
            self._next_periodic = time.monotonic() + self.s.sync_interval

    def _start_sync(self, reason: str) -> None:
        if self.superseded is not None or self._closing:
            return
        self._next_periodic = float("inf")
        if self._sync_thread is not None and self._sync_thread.is_alive():
            self._sync_again = self._sync_again or reason
            return
        self._spawn_sync(reason)

    def _spawn_sync(self, reason: str) -> None:
        self._sync_thread = threading.Thread(
            target=self._sync_worker, args=(reason,), name="sync", daemon=True
        )
        self._sync_thread.start()

    def _sync_worker(self, reason: str) -> None:
        assert self.ckpt is not None
        started = time.time()
        try:
            result = consistent_sync(
                self.ckpt,
                self.freezer,
                reason,
                wait=FINAL_SAVE_WAIT_SECONDS if self._closing else SAVE_WAIT_SECONDS,
                rehash="all" if reason == "interruption" else self.s.rehash,
                pids=self._job_pids,
                on_frozen=self._write_frozen,
                final=self._closing,
            )
        except Exception as exc:
            self.events.put(Event("sync-failed", (started, reason, exc)))
            return
        if result.sequence is not None and self.s.checkpoint_keep:
            try:
                self.ckpt.prune(self.s.checkpoint_keep)
            except Exception as exc:  # the commit stands; old checkpoints wait for next time
                log.warning("sync.prune_failed", error=str(exc), error_type=type(exc).__name__)
        # Last: a request that comes while the thread is alive is queued (_sync_again) and
        # served when this event is handled; posted before the prune, it could be lost.
        self.events.put(Event("synced", (started, result)))

    def _on_sync_done(self, ev: Event) -> None:
        if self._sync_thread is not None:  # its event is its last act: a request from now
            self._sync_thread.join(1.0)  # on starts a new sync instead of being queued
        if ev.kind == "synced":
            started, result = ev.payload
            self._sync_outcome = result
            self._log_sync(result)
            self._last_sync_seconds = result.seconds
            if result.bytes_uploaded >= _RATE_SAMPLE_BYTES:
                self._upload_rate = result.bytes_uploaded / max(result.seconds, 1e-3)
            self._write_status(self._current_sequence(), started, result.reason)
        else:
            _started, reason, exc = ev.payload
            self._sync_outcome = exc
            if isinstance(exc, Superseded):
                log.error("sync.superseded", error=str(exc))
                self.superseded = exc
                return
            if not isinstance(exc, (CheckpointError, OSError)):
                log.error("agent.bug", error=repr(exc), where="sync")
            log.error(
                "sync.final_failed" if self._closing else "sync.failed",
                reason=reason,
                error=str(exc),
                error_type=type(exc).__name__,
                restorable=self._current_sequence(),
            )
        if self._closing:
            return
        if self._sync_again is not None:
            again, self._sync_again = self._sync_again, None
            self._start_sync(again)
        else:
            self._schedule_periodic()

    def _sync_deadline(self) -> float | None:
        """When a sync must be given up (monotonic): a second before the notice's deadline."""
        left = self._seconds_left()
        return None if left is None else time.monotonic() + left - 1.0

    def _wait_for_sync(self, reason: str) -> bool:
        """Serve events until the sync thread is done; False if the deadline came first.

        The deadline is looked up on every turn: a notice may arrive, or move closer, while
        we wait (SIGTERM during the exit sync, say).
        """
        while self._sync_thread is not None and self._sync_thread.is_alive():
            deadline = self._sync_deadline()
            if deadline is not None and time.monotonic() >= deadline:
                # The thread dies with the process; a half-done upload never damages the store.
                self.abandoned_work = True
                log.error(
                    "sync.final_failed",
                    reason=reason,
                    restorable=self._current_sequence(),
                    error="the checkpoint did not finish before the deadline",
                )
                return False
            self._pump(0.1 if deadline is None else min(0.1, deadline - time.monotonic()))
        while True:  # what the finished worker (or anyone else) posted meanwhile
            try:
                self._handle(self.events.get_nowait())
            except queue.Empty:
                return True

    def _final_sync(self, reason: str) -> SyncResult | None:
        """The last checkpoint, after any sync in flight (its uploads count for this one)."""
        self._closing = True  # no new periodic or requested syncs from here on
        self._sync_again = None
        if not self._wait_for_sync(reason) or self.superseded is not None:
            return None
        self._sync_outcome = None
        self._spawn_sync(reason)
        if not self._wait_for_sync(reason):
            return None
        outcome = self._sync_outcome
        return outcome if isinstance(outcome, SyncResult) else None

    def _current_sequence(self) -> int | None:
        base = self.ckpt.base if self.ckpt else None
        return base.sequence if base else None

    # -- endings ------------------------------------------------------------------------

    def _finish_exited(self, code: int) -> int:
        assert self.child is not None
        log.info(
            "child.exited",
            exit_code=code,
            run_seconds=_round(time.monotonic() - self.child.started),
        )
        left = self.child.reap_leftovers()
        if left:
            log.warning("child.leftovers_ended", processes=left)
        result = self._final_sync("exit")
        if result is None and self.superseded is None and code == 0:
            log.error("agent.exit", exit_code=EXIT_CHECKPOINT_FAILED, why="final checkpoint failed")
            return EXIT_CHECKPOINT_FAILED
        if self.superseded is not None:
            log.error("agent.exit", exit_code=EXIT_SUPERSEDED, why=str(self.superseded))
            return EXIT_SUPERSEDED
        log.info("agent.exit", exit_code=code, why="the job exited")
        return code

    def _seconds_left(self) -> float | None:
        """Until the current interruption's deadline (None when there is no notice)."""
        if self.interruption is None:
            return None
        left = self.interruption.seconds_left()
        return self.s.grace_period if left is None else left

    def _finish_interrupted(self, *, child_ran: bool) -> int:
        assert self.interruption is not None
        t0 = time.monotonic()

        def clock() -> dict[str, float | None]:
            return {"elapsed": _round(time.monotonic() - t0), "seconds_left": _round(self._left())}

        write_notice_file(self.notice_file, self.interruption)
        if child_ran and self.child is not None and self.child.running:
            reserve, plan = self._reserve(self._left())
            log.info(
                "shutdown.plan",
                **plan,
                reserve_seconds=_round(reserve),
                child_seconds=_round(max(self._left() - reserve, 0.0)),
                **clock(),
            )
            self.child.send(self.s.stop_signal)
            log.info("shutdown.stop_child", signal=self.s.stop_signal.name, **clock())
            notice = self.interruption
            child_end = time.monotonic() + max(self._left() - reserve, 0.0)
            while self.child.reap() is None and time.monotonic() < child_end:
                self._pump(min(0.1, child_end - time.monotonic()))
                if self.interruption is not notice:  # a later notice moved the deadline closer
                    notice, left = self.interruption, self._left()
                    child_end = min(child_end, time.monotonic() + left - min(reserve, 0.8 * left))
            code = self.child.reap()
            if code is None:
                killed = self.child.kill_tree()
                code = self.child.wait(5.0)
                log.warning("shutdown.child_killed", processes=killed, exit_code=code, **clock())
            else:
                log.info("shutdown.child_exited", exit_code=code, **clock())
            self.child.reap_leftovers(grace=1.0)
        result = self._final_sync("interruption") if child_ran else None
        if result is not None:
            log.info("shutdown.final_checkpoint", sequence=result.sequence, **clock())
        if self.superseded is not None:
            log.error("agent.exit", exit_code=EXIT_SUPERSEDED, why=str(self.superseded))
            return EXIT_SUPERSEDED
        self._continue_batch_job()
        log.info(
            "agent.exit",
            exit_code=EXIT_INTERRUPTED,
            why="interrupted",
            committed=result.sequence if result else None,
            restorable=self._current_sequence(),
            **clock(),
        )
        return EXIT_INTERRUPTED

    def _left(self) -> float:
        return max(self._seconds_left() or 0.0, 0.0)

    def _continue_batch_job(self) -> None:
        """Past Batch's last attempt, submit a continuation; never past the deadline."""
        if not self.s.continue_jobs:
            return
        worker = threading.Thread(
            target=batch.continue_after_interruption, args=(self.s,), daemon=True
        )
        worker.start()
        worker.join(max(self._left() - 0.5, 0.0))
        if worker.is_alive():
            self.abandoned_work = True
            log.error(
                "batch.continuation_failed",
                error="the Batch API did not answer before the deadline",
                action=f"resubmit the job with SPOT_AGENT_JOB_ID={self.s.job_id} to resume",
            )

    def _finish_superseded(self) -> int:
        assert self.child is not None
        log.error("shutdown.superseded", action="stopping the job: a newer attempt owns it")
        self.child.stop(self.s.stop_signal, max(self.s.grace_period - self.s.upload_reserve, 1.0))
        self.child.reap_leftovers(grace=1.0)
        log.error("agent.exit", exit_code=EXIT_SUPERSEDED, why=str(self.superseded))
        return EXIT_SUPERSEDED

    # -- the job's output and the logs ----------------------------------------------------

    def _drain_output(self) -> None:
        if self.output is not None:
            self.output.close(OUTPUT_DRAIN_SECONDS)

    def _log_flush_seconds(self) -> float:
        """Time to ship the last log events: bounded, and within an interruption's deadline."""
        left = self._seconds_left()
        if left is None:
            return LOG_FLUSH_SECONDS
        return min(LOG_FLUSH_SECONDS, max(left - 1.0, 0.0))

    def _reserve(self, budget: float) -> tuple[float, dict[str, Any]]:
        """Time kept back for the final checkpoint, and the figures it was sized from.

        At least ``--upload-reserve``; more when the last sync took longer, or when the bytes
        changed since the last commit would take longer at the last measured upload rate.
        Never more than 80% of the time left: the job needs some time to stop cleanly.
        """
        try:
            pending = self.ckpt.pending_bytes() if self.ckpt is not None else 0
        except Exception as exc:  # sizing is an optimisation: it must never stop the shutdown
            log.warning("shutdown.pending_unknown", error=repr(exc))
            pending = 0
        estimate = pending / self._upload_rate if self._upload_rate else 0.0
        wanted = max(self.s.upload_reserve, 2.0 * self._last_sync_seconds, 1.5 * estimate)
        plan = {
            "pending_bytes": pending,
            "upload_rate": round(self._upload_rate) if self._upload_rate else None,
            "last_sync_seconds": _round(self._last_sync_seconds),
        }
        return min(wanted, 0.8 * budget), plan

    # -- child environment and status ---------------------------------------------------

    def _child_env(self, restored: int | None) -> dict[str, str]:
        env = dict(self.s.child_environ)
        env.update(
            CHECKPOINT_DIR=str(self.s.checkpoint_dir),
            SPOT_AGENT_PID=str(os.getpid()),
            SPOT_AGENT_NOTICE_FILE=str(self.notice_file),
            SPOT_AGENT_STATUS_FILE=str(self.status_file),
            SPOT_AGENT_JOB_ID=self.s.job_id,
            SPOT_AGENT_ATTEMPT=str(self.attempt),
            SPOT_AGENT_RESTORED="" if restored is None else str(restored),
            SPOT_AGENT_LOCK_FILE=str(self.freezer.lock_path),
            SPOT_AGENT_STOP_SIGNAL=self.s.stop_signal.name,
        )
        return env

    def _write_status(self, sequence: int | None, started: float, reason: str) -> None:
        doc = {"sequence": sequence, "started": started, "finished": time.time(), "reason": reason}
        with self._status_lock:
            self._status.update(doc)
            write_private_file(self.status_file, json.dumps(self._status))

    def _reset_freezer(self, *, create_lock: bool) -> None:
        try:
            stale = self.freezer.reset(create_lock=create_lock)
        except OSError as exc:
            self.freezer.usable = False
            log.warning("freeze.unavailable", error=str(exc), action="syncing the live dir")
        else:
            if stale:
                log.info("freeze.stale_removed", bytes=stale)

    def _write_frozen(self, frozen: Frozen) -> None:
        """request_sync() returns once the state it vouched for is frozen: say when."""
        with self._status_lock:
            self._status["frozen"] = frozen.taken
            try:
                write_private_file(self.status_file, json.dumps(self._status))
            except OSError as exc:  # the sync goes on; the job's request_sync times out
                log.warning("status.write_failed", path=str(self.status_file), error=str(exc))

    def _job_pids(self) -> list[int]:
        return [p.pid for p in self.child.tree()] if self.child is not None else []

    # -- log lines ----------------------------------------------------------------------

    def _log_restore(self, r: RestoreResult) -> None:
        if r.manifest is None:
            log.info(
                "restore.none",
                why="no checkpoint yet: the job starts fresh",
                damaged_skipped=len(r.skipped),
            )
            return
        log.info(
            "restore.done",
            sequence=r.manifest.sequence,
            created=r.manifest.created,
            files=len(r.manifest.files),
            bytes=r.manifest.size,
            files_downloaded=r.files_written,
            files_already_present=r.files_kept,
            bytes_downloaded=r.bytes_downloaded,
            seconds=_round(r.seconds),
            progress=r.manifest.progress or None,
        )
        if r.extra_files:
            log.warning(
                "restore.extra_files",
                count=r.extra_files,
                why="files in the checkpoint dir that the checkpoint does not have; left in place",
            )

    def _log_sync(self, r: SyncResult) -> None:
        common = {
            "reason": r.reason,
            "files": r.files,
            "bytes": r.bytes_total,
            "bytes_uploaded": r.bytes_uploaded,
            "bytes_skipped": r.bytes_total - r.bytes_uploaded,
            "bytes_hashed": r.bytes_hashed,
            "seconds": _round(r.seconds),
            "freeze_seconds": _round(r.freeze_seconds),
            "freeze_bytes_held": r.freeze_bytes_held,
        }
        if r.left_out:
            common["left_out"] = list(r.left_out)
        if r.sequence is None:
            log.info("sync.unchanged", **common)
        else:
            log.info("sync.committed", sequence=r.sequence, **common)


CHECKPOINT_DIR_SETTING = "--checkpoint-dir (SPOT_AGENT_CHECKPOINT_DIR)"


def prepare_checkpoint_dir(path: Path) -> None:
    """Create the checkpoint dir (0700) and prove the agent can write in it, before any
    attempt is claimed; a :class:`ConfigError` (exit 2) names the setting otherwise."""
    try:
        make_private_dirs(path)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise ConfigError(
            CHECKPOINT_DIR_SETTING, f"cannot create {path}{where}: {exc.strerror}"
        ) from None
    if not path.is_dir():
        raise ConfigError(CHECKPOINT_DIR_SETTING, f"{path} exists and is not a directory")
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".spot-agent-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            CHECKPOINT_DIR_SETTING, f"cannot write in {path}: {exc.strerror}"
        ) from None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
