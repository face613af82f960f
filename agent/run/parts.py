"""What the loop drives, as small interfaces: the job's process, the checkpoints, and the
start-up steps. The real ones wrap :mod:`agent.supervisor` and :mod:`checkpoint`; the
loop's unit tests pass fakes."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from checkpoint.manifest import Manifest
from checkpoint.store import Store
from checkpoint.sync import Checkpointer, JobStore, RestoreResult, SyncResult

from ..config import Settings
from ..group import GroupRun
from ..notices import Notice, NoticeSource
from .job import JobProcess
from .savepoints import SavePointCheckpoints
from .sources import notice_sources


class Job(Protocol):
    """The job's process tree (see :class:`agent.supervisor.Child`)."""

    started: float  # monotonic

    @property
    def running(self) -> bool: ...
    @property
    def reaper(self) -> bool: ...
    def start(self) -> int: ...
    def send(self, sig: int) -> None: ...
    def reap(self) -> int | None: ...
    def wait(self, timeout: float) -> int | None: ...
    def kill_tree(self) -> int: ...
    def reap_leftovers(self, grace: float) -> int: ...
    def close_output(self, timeout: float) -> None: ...
    def pids(self) -> list[int]: ...


class Checkpoints(Protocol):
    """One attempt's view of the job's checkpoints (see :class:`checkpoint.sync.Checkpointer`)."""

    @property
    def base(self) -> Manifest | None: ...
    def restore(self) -> RestoreResult: ...
    def sync_once(self, reason: str) -> SyncResult: ...
    def prune(self, keep: int) -> list[int]: ...
    def pending_bytes(self) -> int: ...
    def close(self) -> None: ...
    def attach(
        self, job_pids: Callable[[], list[int]], on_frozen: Callable[[float], None]
    ) -> None: ...
    def between_saves(self, wait: float) -> AbstractContextManager[bool]: ...


@dataclass(frozen=True)
class Parts:
    #: check the store and claim an attempt (slow: runs in a worker)
    claim: Callable[[], tuple[int, Checkpoints]]
    #: the notice sources besides SIGTERM (slow: runs in a worker)
    sources: Callable[[Callable[[dict[str, Any]], None]], tuple[NoticeSource, ...]]
    #: the job's process, not yet started, with this environment
    make_job: Callable[[Mapping[str, str]], Job]
    #: submit a Batch continuation (slow: runs in a worker, bounded by the deadline)
    continue_job: Callable[[], None]
    #: route signals to the loop (False in in-process tests: they post events themselves)
    own_signals: bool = True
    #: a group's: tell the other nodes of an interruption (slow: runs in a worker)
    announce: Callable[[Notice], None] | None = None
    #: a group's: wait at most this many seconds for the group record of the last part
    group_complete: Callable[[float], bool] | None = None


def real_parts(s: Settings, store: Store) -> Parts:
    group = GroupRun(s.group, store, s.job_id) if s.group is not None else None

    def claim() -> tuple[int, Checkpoints]:
        store.check()
        job = group.job if group is not None else JobStore(store, s.job_id)
        host = socket.gethostname()
        attempt = job.claim_attempt({"host": host, "batch_attempt": s.batch_attempt})
        ckpt = Checkpointer(
            job, s.checkpoint_dir, attempt=attempt, max_bytes_in_flight=s.max_bytes_in_flight
        )
        saves = SavePointCheckpoints(ckpt, s.checkpoint_dir, s.rehash)
        if group is not None:
            return attempt, group.claimed(attempt, saves, s.checkpoint_dir)
        return attempt, saves

    def sources(on_identity: Callable[[dict[str, Any]], None]) -> tuple[NoticeSource, ...]:
        found = notice_sources(s, on_identity)
        return found + group.sources() if group is not None else found

    def continue_job() -> None:
        from .. import batch  # boto3's Batch client: only when a continuation is due

        batch.continue_after_interruption(s)

    return Parts(
        claim=claim,
        sources=sources,
        make_job=lambda env: JobProcess(s, env),
        continue_job=continue_job,
        announce=group.announce if group is not None else None,
        group_complete=group.wait_complete if group is not None else None,
    )
