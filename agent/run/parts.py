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
from ..notices import NoticeSource
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
    def send(self, sig: int, *, group: bool = True) -> None: ...
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
        self,
        job_pids: Callable[[], list[int]],
        on_frozen: Callable[[float], None],
        on_declared: Callable[[float], None] | None = None,
    ) -> None: ...
    def between_saves(self, wait: float) -> AbstractContextManager[bool]: ...
    def declared(self, at: float | None = None) -> None: ...


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


def real_parts(s: Settings, store: Store) -> Parts:
    def claim() -> tuple[int, Checkpoints]:
        store.check()
        job = JobStore(store, s.job_id)
        host = socket.gethostname()
        attempt = job.claim_attempt({"host": host, "batch_attempt": s.batch_attempt})
        ckpt = Checkpointer(
            job, s.checkpoint_dir, attempt=attempt, max_bytes_in_flight=s.max_bytes_in_flight
        )
        return attempt, SavePointCheckpoints(ckpt, s.checkpoint_dir, s.rehash)

    def continue_job() -> None:
        from .. import batch  # boto3's Batch client: only when a continuation is due

        batch.continue_after_interruption(s)

    return Parts(
        claim=claim,
        sources=lambda on_identity: notice_sources(s, on_identity),
        make_job=lambda env: JobProcess(s, env),
        continue_job=continue_job,
    )
