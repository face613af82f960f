"""What the loop drives, as small interfaces: the job's process, the checkpoints, and the
start-up steps. The real ones wrap :mod:`agent.process.supervisor` and :mod:`checkpoint`; the
loop's unit tests pass fakes."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.group import RankStore
from checkpoint.engine.store.base import Store

from .. import logs
from ..checkpoint_view import Checkpoints
from ..config import BECAUSE_BUDGET, BECAUSE_LAST_ATTEMPT, Settings
from ..config.engine import engine_config
from ..group import GroupRun
from ..notices import Notice, NoticeSource
from ..stores import open_configured_store
from ..timeline.model import past_interruptions
from ..timeline.record import AttemptRecord
from .job import JobProcess
from .lease import LeasedCheckpoints, LeaseKeeper
from .savepoints import SavePointCheckpoints
from .sources import notice_sources
from .startup import StartupPolicy, retry_transient

log = logs.get_logger()


@dataclass(frozen=True)
class Continuation:
    """A Batch job this attempt submitted to carry the job on."""

    job_id: str
    queue: str
    because: str  # BECAUSE_LAST_ATTEMPT or BECAUSE_BUDGET (config)

    @property
    def moved(self) -> bool:
        """The job goes on elsewhere: this attempt must not be retried."""
        return self.because == BECAUSE_BUDGET


class Job(Protocol):
    """The job's process tree (see :class:`agent.process.supervisor.Child`)."""

    started: float  # monotonic

    @property
    def running(self) -> bool: ...
    @property
    def reaper(self) -> bool: ...
    def start(self) -> int: ...
    def send(self, sig: int, *, group: bool = True) -> None: ...
    def reap(self) -> int | None: ...
    def wait(self, timeout: float) -> int | None: ...
    def kill_tree(self) -> int: ...
    def reap_leftovers(self, grace: float) -> int: ...
    def close_output(self, timeout: float) -> None: ...
    def pids(self) -> list[int]: ...


@dataclass(frozen=True)
class Parts:
    #: check the store and claim an attempt (slow: runs in a worker)
    claim: Callable[[], tuple[int, Checkpoints]]
    #: the notice sources besides SIGTERM (slow: runs in a worker)
    sources: Callable[[Callable[[dict[str, Any]], None]], tuple[NoticeSource, ...]]
    #: the job's process, not yet started, with this environment
    make_job: Callable[[Mapping[str, str]], Job]
    #: after an interruption of this attempt: submit a Batch continuation if one is due,
    #: to the fallback queue or past the last attempt (slow: runs in a worker, bounded by
    #: the deadline); what was submitted, if anything
    continue_job: Callable[[int], Continuation | None]
    #: route signals to the loop (False in in-process tests: they post events themselves)
    own_signals: bool = True
    #: this attempt's timeline record (cheap: its writes run in a thread of their own)
    record: Callable[[int], AttemptRecord] = lambda attempt: AttemptRecord(attempt, None)
    #: a group's: tell the other nodes of an interruption (slow: runs in a worker)
    announce: Callable[[Notice], None] | None = None
    #: a group's: wait at most this many seconds for the group record of the last part
    group_complete: Callable[[float], bool] | None = None


def _interruptions(job: JobStore, attempt: int) -> int | None:
    """This job's interruptions so far, this one included, from its timeline records."""
    try:
        return past_interruptions(job, attempt) + 1
    except Exception as exc:  # unknown: no fallback this time, Batch retries as usual
        log.error("batch.fallback_skipped", why="could not count the interruptions", error=str(exc))
        return None


def real_parts(s: Settings, store: Store) -> Parts:
    group = GroupRun(s.group, store, s.job_id) if s.group is not None else None

    def job_in(where: Store) -> JobStore:
        """The job's keys in ``where``: a group's node has its own rank's folders."""
        if s.group is not None:
            return RankStore(where, s.job_id, s.group.rank)
        return JobStore(where, s.job_id)

    def claim() -> tuple[int, Checkpoints]:
        # The first calls go through a client of their own, with start-up's short
        # timeouts, and are retried while they fail in ways that may pass (.startup).
        policy = StartupPolicy(s.startup_timeout)
        first = open_configured_store(s, **policy.client_options())
        host = socket.gethostname()

        def check_and_claim() -> int:
            first.check()
            info = {"host": host, "batch_attempt": s.batch_attempt}
            return job_in(first).claim_attempt(info)

        try:
            attempt = retry_transient(check_and_claim, policy)
        finally:
            first.close()
        # a group's rank: the GroupRun's own RankStore (its pruning pins what records name)
        job = group.job if group is not None else job_in(store)
        ckpt = Checkpointer(job, s.checkpoint_dir, attempt=attempt, config=engine_config(s))
        keeper = LeaseKeeper(job, attempt, host)
        keeper.start()  # gc and delete now know the job is live (.lease)
        saves = LeasedCheckpoints(SavePointCheckpoints(ckpt, s.checkpoint_dir, s.rehash), keeper)
        if group is not None:
            return attempt, group.claimed(attempt, saves, s.checkpoint_dir)
        return attempt, saves

    def sources(on_identity: Callable[[dict[str, Any]], None]) -> tuple[NoticeSource, ...]:
        found = notice_sources(s, on_identity)
        return found + group.sources() if group is not None else found

    def continue_job(attempt: int) -> Continuation | None:
        from ..batch import continuation  # boto3's Batch client: only when one is due

        if s.fallback_queue and s.fallback_after:
            interruptions = _interruptions(job_in(store), attempt)
            if interruptions is not None and interruptions >= s.fallback_after:
                moved = continuation.move_to_fallback(s, interruptions)
                if moved is not None:
                    return Continuation(moved, s.fallback_queue, BECAUSE_BUDGET)
        new_job_id = continuation.continue_after_interruption(s)
        if new_job_id is None:
            return None
        return Continuation(new_job_id, s.batch_job_queue or "", BECAUSE_LAST_ATTEMPT)

    def record(attempt: int) -> AttemptRecord:
        batch = {
            "job_id": s.batch_job_id,
            "attempt": s.batch_attempt,
            "queue": s.batch_job_queue,
            "compute_environment": s.batch_compute_environment,
        }
        return AttemptRecord.in_store(
            job_in(store),
            attempt,
            host=socket.gethostname(),
            batch={k: v for k, v in batch.items() if v is not None} or None,
            continued_because=s.continued_because,
            continues_from=s.continues_from,
        )

    return Parts(
        claim=claim,
        sources=sources,
        make_job=lambda env: JobProcess(s, env),
        continue_job=continue_job,
        record=record,
        announce=group.announce if group is not None else None,
        group_complete=group.wait_complete if group is not None else None,
    )
