"""How a run ends: the job exited, an interruption stopped it, a newer attempt took over,
or start-up was cut short. Each returns the agent's exit status (see :mod:`agent.exits`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from checkpoint.engine.save.sync import SyncResult
from checkpoint.errors import LocalWriteError, StoreError, Superseded

from .. import exits, logs
from ..checkpoint_view import Checkpoints
from ..config import ConfigError, Settings
from ..process.signals import Sig
from ..timeline.model import Attempt
from ..timeline.record import AttemptRecord
from .events import StartupFailed
from .jobenv import JobFiles
from .parts import Continuation, Job, Parts
from .report import rounded
from .scheduler import Interruption, SyncScheduler
from .syncs import Syncs

log = logs.get_logger()

#: at most this long to read the job's last output, and to ship the last log events
OUTPUT_DRAIN_SECONDS = 2.0
LOG_FLUSH_SECONDS = 10.0
#: a sync still running this close to the deadline is given up (the process must be gone)
SYNC_MARGIN = 1.0
#: at most this long (and a fifth of the reserve) waiting for a save to end before SIGKILL
KILL_SAVE_WAIT = 1.0
#: the walk that sizes the reserve gets at most this long, and this share of the time left
PENDING_WALK_SECONDS = 2.0
PENDING_WALK_SHARE = 0.1


class RunLoop(Protocol):
    """What an ending reads of the run loop (``loop.RunLoop``), and the two ways it lets
    the loop handle events while it waits (:meth:`pump`, :meth:`drain`)."""

    s: Settings
    parts: Parts
    files: JobFiles
    scheduler: SyncScheduler
    syncs: Syncs
    ckpt: Checkpoints | None
    job: Job | None
    interruption: Interruption | None
    stopped_by: Sig | None
    attempt: int
    record: AttemptRecord
    startup_error: str | None

    @property
    def superseded(self) -> Superseded | None: ...
    def restorable(self) -> int | None: ...
    def seconds_left(self) -> float | None: ...
    def left(self) -> float: ...
    def pump(self, timeout: float) -> None: ...
    def drain(self) -> None: ...
    def spawn_worker(self, target: Callable[[], None], name: str) -> threading.Thread: ...


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


def finish_interrupted(loop: RunLoop) -> int:
    assert loop.interruption is not None and loop.job is not None
    job, t0 = loop.job, time.monotonic()

    def clock() -> dict[str, float | None]:
        elapsed = time.monotonic() - t0
        return {"elapsed": rounded(elapsed), "seconds_left": rounded(loop.seconds_left())}

    loop.files.write_notice(loop.interruption.notice)
    killed = 0
    if job.running:
        plan = loop.scheduler.reserve(loop.left(), _pending_bytes(loop))
        log.info(
            "shutdown.plan",
            **plan.log_fields(),
            child_seconds=rounded(max(loop.left() - plan.reserve, 0.0)),
            **clock(),
        )
        send_stop(loop, min(KILL_SAVE_WAIT, 0.2 * plan.reserve))
        log.info(
            "shutdown.stop_child",
            signal=loop.s.stop_signal.name,
            to=loop.s.stop_signal_to,
            **clock(),
        )
        code, killed = _wait_for_job(loop, plan.reserve)
        if killed:
            log.warning("shutdown.child_killed", processes=killed, exit_code=code, **clock())
        else:
            log.info("shutdown.child_exited", exit_code=code, **clock())
        job.reap_leftovers(min(1.0, loop.left() / 4))
    if not killed and job.reap() == 0 and loop.ckpt is not None:
        loop.ckpt.declared()  # it stopped by itself (maybe before the signal): done writing
    result = final_sync(loop, "interruption")
    # Nothing new since the last commit: that one is the final checkpoint, and says so.
    committed = loop.restorable() if result is not None else None
    nothing_new = result is not None and result.sequence is None
    if result is not None:
        log.info(
            "shutdown.final_checkpoint", sequence=committed, nothing_new=nothing_new, **clock()
        )
    if loop.superseded is not None:
        log.error("agent.exit", exit_code=exits.SUPERSEDED, why=str(loop.superseded))
        return exits.SUPERSEDED
    if result is not None and not _group_complete(loop):
        log_interruption_cost(loop)
        log.error(
            "agent.exit",
            exit_code=exits.GROUP_INCOMPLETE,
            why="interrupted; this node's part is committed, but not every node's",
            committed=committed,
            restorable=loop.restorable(),
            **clock(),
        )
        return exits.GROUP_INCOMPLETE
    moved = continue_batch_job(loop)
    code = exits.INTERRUPTED if result is not None else exits.INTERRUPTED_UNSAVED
    why = "interrupted" if result is not None else "interrupted; final checkpoint failed"
    if moved:
        code, why = exits.MOVED_TO_FALLBACK, f"{why}; the job goes on on {loop.s.fallback_queue}"
    log_interruption_cost(loop)
    log.info(
        "agent.exit",
        exit_code=code,
        why=why,
        committed=committed,
        nothing_new=nothing_new,
        restorable=loop.restorable(),
        **clock(),
    )
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


def _group_complete(loop: RunLoop) -> bool:
    """A group's node: wait (until the deadline's margin) for every node's part of the
    save point it just committed. True outside a group."""
    wait = loop.parts.group_complete
    if wait is None:
        return True
    done: list[bool] = []
    seconds = max(loop.left() - SYNC_MARGIN, 0.0)
    worker = loop.spawn_worker(lambda: done.append(wait(seconds)), "group-complete")
    worker.join(seconds + 1.0)
    return bool(done and done[0])


def _wait_for_job(loop: RunLoop, reserve: float) -> tuple[int | None, int]:
    """Serve events until the job exits or its time is up, then SIGKILL its tree.
    Returns (exit code, processes killed). A later, closer notice moves the end closer."""
    assert loop.job is not None and loop.interruption is not None
    job, current = loop.job, loop.interruption
    end = time.monotonic() + max(loop.left() - reserve, 0.0)
    while job.reap() is None and time.monotonic() < end:
        loop.pump(min(0.1, end - time.monotonic()))
        if loop.interruption is not current:
            current, left = loop.interruption, loop.left()
            end = min(end, time.monotonic() + left - min(reserve, 0.8 * left))
    code = job.reap()
    if code is not None:
        return code, 0
    assert loop.ckpt is not None
    # Never in the middle of a save: a save cut off by SIGKILL cannot be committed, and the
    # final checkpoint would have to fall back to an older state. Saves are short; a job
    # still saving after this wait is killed all the same.
    with loop.ckpt.between_saves(min(KILL_SAVE_WAIT, 0.2 * reserve)) as held:
        if not held:
            log.debug("shutdown.kill_unguarded", why="no save-point lock, or a save went on")
        killed = job.kill_tree()
        code = job.wait(max(min(5.0, loop.left() - SYNC_MARGIN), 0.5))
    return code, killed


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
            restorable=loop.restorable(),
            seconds_left=rounded(loop.seconds_left()),
        )
        return exits.INTERRUPTED
    if loop.stopped_by is not None:
        code = exits.killed_by(loop.stopped_by)
        log.info("agent.exit", exit_code=code, why=f"{loop.stopped_by.name} before the job started")
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
        left = loop.seconds_left()
        if left is not None and left <= SYNC_MARGIN:
            # The worker dies with the process; a half-done upload never damages the store.
            log.error(
                "sync.final_failed",
                reason=reason,
                restorable=loop.restorable(),
                error="the checkpoint did not finish before the deadline",
            )
            return False
        loop.pump(0.1 if left is None else min(0.1, left - SYNC_MARGIN))
    loop.drain()  # what the finished worker (or anyone else) posted meanwhile
    return True


def continue_batch_job(loop: RunLoop) -> bool:
    """Submit a continuation when one is due (past Batch's last attempt, or to the fallback
    queue once the interruption budget is spent); never past the deadline. True when the
    job moved to the fallback queue: this attempt must exit with a code Batch does not
    retry."""
    if not loop.s.continue_jobs and not loop.s.fallback_queue:
        return False
    submitted: list[Continuation | None] = []
    attempt = loop.attempt
    worker = loop.spawn_worker(
        lambda: submitted.append(loop.parts.continue_job(attempt)), "batch-continuation"
    )
    worker.join(max(loop.left() - 0.5, 0.0))
    if worker.is_alive():
        log.error(
            "batch.continuation_failed",
            error="the Batch API did not answer before the deadline",
            action=f"resubmit the job with SPOT_AGENT_JOB_ID={loop.s.job_id} to resume",
        )
        return False
    done = submitted[0] if submitted else None
    if done is None:
        return False
    loop.record.continued(done.job_id, done.queue, done.because)
    return done.moved


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


def _pending_bytes(loop: RunLoop) -> int:
    """The bytes changed since the last commit, to size the reserve. It walks the dir, so
    it runs in a worker and gets a bounded share of the time left; unknown counts as 0."""
    ckpt = loop.ckpt
    if ckpt is None:
        return 0
    found: list[int] = []

    def walk() -> None:
        try:
            found.append(ckpt.pending_bytes())
        except Exception as exc:  # sizing is an optimisation: it must never stop the shutdown
            log.warning("shutdown.pending_unknown", error=repr(exc))

    worker = loop.spawn_worker(walk, "pending-bytes")
    worker.join(min(PENDING_WALK_SECONDS, PENDING_WALK_SHARE * loop.left()))
    if worker.is_alive():
        log.warning("shutdown.pending_unknown", error="the walk of the dir took too long")
    return found[0] if found else 0
