"""The interrupted ending, the path of a SIGTERM or a spot notice once the job runs: write
the notice file, size the reserve, send the stop signal between two saves, wait for the job
until the deadline less the reserve (then SIGKILL its tree), commit the final checkpoint,
continue the Batch job when one is due, and exit 75 (:data:`agent.exits.INTERRUPTED`; else
``INTERRUPTED_UNSAVED``, the final checkpoint failed; ``MOVED_TO_FALLBACK``, the job goes on
on the fallback queue; ``GROUP_INCOMPLETE``, a group's other nodes did not all commit;
``SUPERSEDED``, a newer attempt took over).
"""

from __future__ import annotations

import time

from .. import exits, logs
from .endings import (
    KILL_SAVE_WAIT,
    SYNC_MARGIN,
    RunLoop,
    final_sync,
    log_interruption_cost,
    send_stop,
    tell_if_gone,
)
from .parts import Continuation
from .report import rounded

log = logs.get_logger()

#: the walk that sizes the reserve gets at most this long, and this share of the time left
PENDING_WALK_SECONDS = 2.0
PENDING_WALK_SHARE = 0.1


def finish_interrupted(loop: RunLoop) -> int:
    assert loop.interruption is not None and loop.job is not None
    job, t0 = loop.job, time.monotonic()

    def clock() -> dict[str, float | None]:
        elapsed = time.monotonic() - t0
        return {"elapsed": rounded(elapsed), "seconds_left": rounded(loop.arrived.seconds_left())}

    loop.files.write_notice(loop.interruption.notice)
    killed = 0
    if job.running:
        plan = loop.scheduler.reserve(loop.arrived.left(), _pending_bytes(loop))
        log.info(
            "shutdown.plan",
            **plan.log_fields(),
            child_seconds=rounded(max(loop.arrived.left() - plan.reserve, 0.0)),
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
        job.reap_leftovers(min(1.0, loop.arrived.left() / 4))
    if not killed and job.reap() == 0 and loop.ckpt is not None:
        loop.ckpt.declared()  # it stopped by itself (maybe before the signal): done writing
    tell_if_gone(loop)
    result = final_sync(loop, "interruption")
    # Nothing new since the last commit: that one is the final checkpoint, and says so.
    committed = loop.syncs.restorable() if result is not None else None
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
            restorable=loop.syncs.restorable(),
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
        restorable=loop.syncs.restorable(),
        **clock(),
    )
    return code


def _group_complete(loop: RunLoop) -> bool:
    """A group's node: wait (until the deadline's margin) for every node's part of the
    save point it just committed. True outside a group."""
    wait = loop.parts.group_complete
    if wait is None:
        return True
    done: list[bool] = []
    seconds = max(loop.arrived.left() - SYNC_MARGIN, 0.0)
    worker = loop.workers.spawn(lambda: done.append(wait(seconds)), "group-complete")
    worker.join(seconds + 1.0)
    return bool(done and done[0])


def _wait_for_job(loop: RunLoop, reserve: float) -> tuple[int | None, int]:
    """Serve events until the job exits or its time is up, then SIGKILL its tree.
    Returns (exit code, processes killed). A later, closer notice moves the end closer."""
    assert loop.job is not None and loop.interruption is not None
    job, current = loop.job, loop.interruption
    end = time.monotonic() + max(loop.arrived.left() - reserve, 0.0)
    while job.reap() is None and time.monotonic() < end:
        loop.pump(min(0.1, end - time.monotonic()))
        if loop.interruption is not current:
            current, left = loop.interruption, loop.arrived.left()
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
        code = job.wait(max(min(5.0, loop.arrived.left() - SYNC_MARGIN), 0.5))
    return code, killed


def continue_batch_job(loop: RunLoop) -> bool:
    """Submit a continuation when one is due (past Batch's last attempt, or to the fallback
    queue once the interruption budget is spent); never past the deadline. True when the
    job moved to the fallback queue: this attempt must exit with a code Batch does not
    retry."""
    if not loop.s.continue_jobs and not loop.s.fallback_queue:
        return False
    submitted: list[Continuation | None] = []
    attempt = loop.attempt
    worker = loop.workers.spawn(
        lambda: submitted.append(loop.parts.continue_job(attempt)), "batch-continuation"
    )
    worker.join(max(loop.arrived.left() - 0.5, 0.0))
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

    worker = loop.workers.spawn(walk, "pending-bytes")
    worker.join(min(PENDING_WALK_SECONDS, PENDING_WALK_SHARE * loop.arrived.left()))
    if worker.is_alive():
        log.warning("shutdown.pending_unknown", error="the walk of the dir took too long")
    return found[0] if found else 0
