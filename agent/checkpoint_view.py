"""One attempt's view of the job's checkpoints, as the run loop drives it
(:class:`Checkpoints`), and the base of the views that add to another one
(:class:`WrappedCheckpoints`: the lease of a live attempt, a group's rank).

The real one is ``agent.run.savepoints.SavePointCheckpoints``, on
:class:`checkpoint.engine.checkpointer.Checkpointer`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from checkpoint.engine.format.manifest import Manifest
from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.sync import SyncResult


class Checkpoints(Protocol):
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
    def job_gone(self) -> None: ...


class WrappedCheckpoints:
    """Every call passed to ``inner``; a subclass overrides only what it adds to."""

    def __init__(self, inner: Checkpoints) -> None:
        self.inner = inner

    @property
    def base(self) -> Manifest | None:
        return self.inner.base

    def restore(self) -> RestoreResult:
        return self.inner.restore()

    def sync_once(self, reason: str) -> SyncResult:
        return self.inner.sync_once(reason)

    def prune(self, keep: int) -> list[int]:
        return self.inner.prune(keep)

    def pending_bytes(self) -> int:
        return self.inner.pending_bytes()

    def close(self) -> None:
        self.inner.close()

    def attach(
        self,
        job_pids: Callable[[], list[int]],
        on_frozen: Callable[[float], None],
        on_declared: Callable[[float], None] | None = None,
    ) -> None:
        self.inner.attach(job_pids, on_frozen, on_declared)

    def between_saves(self, wait: float) -> AbstractContextManager[bool]:
        return self.inner.between_saves(wait)

    def declared(self, at: float | None = None) -> None:
        self.inner.declared(at)

    def job_gone(self) -> None:
        self.inner.job_gone()
