"""How a run ends: the job exited, a newer attempt took over, or start-up was cut short
(an interruption once the job runs is :mod:`.interrupted`'s); the final sync and the stop
signal they share, and the protocol an ending sees the loop through. Each ending returns the
agent's exit status (see :mod:`agent.exits`)."""

from __future__ import annotations

import time
from typing import Protocol

from checkpoint.engine.save.sync import SyncResult
from checkpoint.errors import LocalWriteError, StoreError, Superseded

from .. import exits, logs
from ..checkpoint_view import Checkpoints
from ..config import ConfigError, Settings
from ..timeline.model import Attempt
from ..timeline.record import AttemptRecord
from .arrivals import Arrived
from .events import StartupFailed
from .jobenv import JobFiles
from .parts import Job, Parts
from .report import rounded
from .scheduler import Interruption, SyncScheduler
from .syncs import Syncs
from .workers import Workers

log = logs.get_logger()

#: at most this long to read the job's last output, and to ship the last log events
OUTPUT_DRAIN_SECONDS = 2.0
LOG_FLUSH_SECONDS = 10.0
#: a sync still running this close to the deadline is given up (the process must be gone)
SYNC_MARGIN = 1.0
#: at most this long (and a fifth of the reserve) waiting for a save to end before SIGKILL
KILL_SAVE_WAIT = 1.0


class RunLoop(Protocol):
    """What an ending reads of the run loop (``loop.RunLoop``), and the two ways it lets
    the loop handle events while it waits (:meth:`pump`, :meth:`drain`). It writes only
    :attr:`startup_error`."""

    startup_error: str | None  # why start-up failed, one line for stderr

    @property
    def s(self) -> Settings: ...
    @property
    def parts(self) -> Parts: ...
    @property
    def files(self) -> JobFiles: ...
    @property
    def scheduler(self) -> SyncScheduler: ...
    @property
    def syncs(self) -> Syncs: ...
    @property
    def ckpt(self) -> Checkpoints | None: ...
    @property
    def job(self) -> Job | None: ...
    @property
    def arrived(self) -> Arrived: ...  # the interruption, its clock, Ctrl-C before the job
    @property
    def workers(self) -> Workers: ...
    @property
    def interruption(self) -> Interruption | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def record(self) -> AttemptRecord: ...
    @property
    def superseded(self) -> Superseded | None: ...
    def pump(self, timeout: float) -> None: ...
    def drain(self) -> None: ...


def finish_exited(loop: RunLoop, code: int) -> int:
    job = loop.job
    assert job is not None
    job.close_output(OUTPUT_DRAIN_SECONDS)  # the job's last lines before our closing events
    log.info("child.exited", exit_code=code, run_seconds=rounded(time.monotonic() - job.started))
    left = job.reap_leftovers(2.0)
    if left:
        log.warning("child.leftovers_ended", processes=left)
    if code == 0 and loop.ckpt is not None:
        loop.ckpt.declared()  # a job that ended by itself, successfully, is done writing:
        # its last state is declared (the final sync takes the dir as it is)
    tell_if_gone(loop)
    result = final_sync(loop, "exit")
    if loop.superseded is not None:
        log.error("agent.exit", exit_code=exits.SUPERSEDED, why=str(loop.superseded))
        return exits.SUPERSEDED
    if result is None and code == 0:
        log.error("agent.exit", exit_code=exits.CHECKPOINT_FAILED, why="final checkpoint failed")
        return exits.CHECKPOINT_FAILED
    if code == exits.INTERRUPTED and loop.s.job_exit_75_as is not None:
        log.info("agent.exit", exit_code=loop.s.job_exit_75_as, why="the job exited 75 (remapped)")
        return loop.s.job_exit_75_as
    log.info("agent.exit", exit_code=code, why="the job exited")
    return code


def send_stop(loop: RunLoop, wait: float) -> None:
    """The stop signal, between two saves: a signal that lands in the middle of one can
    end a process the save needs (a shell's ``head`` or ``mv``) while the saver goes on and
    declares it whole. Bounded like the deadline kill: after ``wait`` it goes all the same."""
    assert loop.job is not None and loop.ckpt is not None
    with loop.ckpt.between_saves(wait) as held:
        if not held:
            log.debug("shutdown.stop_unguarded", why="no save-point lock, or a save went on")
        loop.job.send(loop.s.stop_signal, group=loop.s.stop_signal_to == "group")


def finish_superseded(loop: RunLoop) -> int:
    assert loop.job is not None
    log.error("shutdown.superseded", action="stopping the job: a newer attempt owns it")
    send_stop(loop, KILL_SAVE_WAIT)
    end = time.monotonic() + max(loop.s.grace_period - loop.s.upload_reserve, 1.0)
    while loop.job.reap() is None and time.monotonic() < end:
        loop.pump(min(0.1, end - time.monotonic()))
        if loop.interruption is not None:  # the platform's deadline comes first
            end = min(end, loop.interruption.deadline - loop.s.upload_reserve)
    if loop.job.reap() is None:
        loop.job.kill_tree()
        loop.job.wait(5.0)
    loop.job.reap_leftovers(1.0)
    log.error("agent.exit", exit_code=exits.SUPERSEDED, why=str(loop.superseded))
    return exits.SUPERSEDED


def startup_cut(loop: RunLoop, failed: StartupFailed | None) -> int:
    """Start-up stopped before the job ran: an interruption or Ctrl-C came, or a step
    failed. Work still under way in a worker (a restore) is abandoned; a restore commits
    nothing, so the stored checkpoints are as they were."""
    if loop.interruption is not None:
        log_interruption_cost(loop)
        log.info(
            "agent.exit",
            exit_code=exits.INTERRUPTED,
            why="interrupted before the job started; the stored checkpoints are unchanged",
            committed=None,
            restorable=loop.syncs.restorable(),
            seconds_left=rounded(loop.arrived.seconds_left()),
        )
        return exits.INTERRUPTED
    stopped_by = loop.arrived.stopped_by
    if stopped_by is not None:
        code = exits.killed_by(stopped_by)
        log.info("agent.exit", exit_code=code, why=f"{stopped_by.name} before the job started")
        return code
    assert failed is not None
    exc = failed.error
    if isinstance(exc, ConfigError):
        raise exc
    if isinstance(exc, StoreError):
        event = "store.unavailable" if failed.step == "claim" else "restore.failed"
        if exc.transient:  # it may pass: a retry of the job, later, will likely start
            code = exits.STORE_NOT_READY
            log.error(event, store=loop.s.checkpoint_uri, error=str(exc), exit_code=code)
            return code
        log.error(event, store=loop.s.checkpoint_uri, error=str(exc))
        loop.startup_error = str(exc)
        return exits.STORE_UNAVAILABLE
    if failed.step == "restore" and isinstance(exc, (LocalWriteError, OSError)):
        # The store is fine; this machine's disk is not (full, read-only, ...). The job's
        # directory keeps what it had: restore stages and verifies first.
        log.error(
            "restore.failed",
            checkpoint_dir=str(loop.s.checkpoint_dir),
            error=str(exc),
            exit_code=exits.CANT_WRITE,
            action="the stored checkpoint is intact; free space or fix the checkpoint dir",
        )
        loop.startup_error = f"cannot restore into {loop.s.checkpoint_dir}: {exc}"
        return exits.CANT_WRITE
    raise exc


def tell_if_gone(loop: RunLoop) -> None:
    """Before the final sync: when nothing of the job runs any more (its leftovers ended
    too), the checkpoints are told, and the final sync reads the dir in place."""
    job = loop.job
    if loop.ckpt is not None and job is not None and not job.running and not job.pids():
        loop.ckpt.job_gone()


def final_sync(loop: RunLoop, reason: str) -> SyncResult | None:
    """The last checkpoint, after any sync in flight (its uploads count for this one)."""
    loop.scheduler.close()
    if not wait_for_sync(loop, reason) or loop.superseded is not None:
        return None
    loop.syncs.forget_last()
    loop.syncs.start(reason)
    if not wait_for_sync(loop, reason):
        return None
    return loop.syncs.last if isinstance(loop.syncs.last, SyncResult) else None


def wait_for_sync(loop: RunLoop, reason: str) -> bool:
    """Serve events until the sync worker is done; False if the deadline came first.

    The deadline is looked up on every turn: a notice may arrive, or move closer, while
    we wait (SIGTERM during the exit sync, say).
    """
    while loop.syncs.running:
        left = loop.arrived.seconds_left()
        if left is not None and left <= SYNC_MARGIN:
            # The worker dies with the process; a half-done upload never damages the store.
            log.error(
                "sync.final_failed",
                reason=reason,
                restorable=loop.syncs.restorable(),
                error="the checkpoint did not finish before the deadline",
            )
            return False
        loop.pump(0.1 if left is None else min(0.1, left - SYNC_MARGIN))
    loop.drain()  # what the finished worker (or anyone else) posted meanwhile
    return True


def record_end(loop: RunLoop, code: int) -> None:
    """Write how the attempt ended into its timeline record."""
    if loop.attempt:  # else no attempt was claimed: there is no record to end
        loop.record.ended("interrupted" if loop.interruption is not None else "exited", code)


def log_interruption_cost(loop: RunLoop) -> None:
    """``interruption.cost``, once per interruption, just before ``agent.exit``: the work
    lost and the time from the notice to the committed final checkpoint (EMF metrics when a
    log group is set; the same figures as ``checkpoints timeline``)."""
    if not loop.attempt:
        return
    loop.record.settle()
    attempt = Attempt(loop.attempt, {}, loop.record.snapshot(), end="interrupted")
    notice = attempt.notice or {}
    log.info(
        "interruption.cost",
        source=notice.get("source"),
        work_lost_seconds=attempt.work_lost(),
        notice_to_committed_seconds=attempt.notice_to_committed(),
        saved_at=(attempt.record.get("last_commit") or {}).get("saved_at"),
        notice_at=notice.get("received"),
    )
