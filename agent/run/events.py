"""What can happen to a run, as types: every thread and signal handler posts one of these
onto the loop's one queue, and the loop dispatches on them with ``match``.

Times are ``time.monotonic()`` seconds, taken where the thing happened (a signal in its
handler, a notice when its source posted it), never when the loop got round to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.sync import SyncResult

from ..checkpoint_view import Checkpoints
from ..notices import Notice, NoticeSource
from ..process.signals import Sig


@dataclass(frozen=True)
class SignalReceived:
    sig: Sig  # a number: real-time signals have no signal.Signals member
    at: float
    forwarded: bool = False  # the handler already passed it on to the job


@dataclass(frozen=True)
class NoticeReceived:
    notice: Notice
    at: float


@dataclass(frozen=True)
class SyncDone:
    result: SyncResult
    started: float  # time.time(): the status file tells the job when its state was read


@dataclass(frozen=True)
class SyncFailed:
    reason: str
    error: BaseException


@dataclass(frozen=True)
class PendingMeasured:
    """A walk of the checkpoint dir counted the bytes changed since the last commit."""

    token: int  # what the scheduler handed out when the walk started
    pending_bytes: int | None  # None: the walk failed (``error``)
    seconds: float  # how long the walk took
    error: str | None = None


@dataclass(frozen=True)
class Claimed:
    """Start-up: the store answered and this attempt is claimed (its fencing number)."""

    attempt: int
    ckpt: Checkpoints


@dataclass(frozen=True)
class SourcesReady:
    """Start-up: the notice sources that work here (none: SIGTERM only)."""

    sources: tuple[NoticeSource, ...]


@dataclass(frozen=True)
class Restored:
    """Start-up: the dir holds the checkpoint the job starts from (or none)."""

    result: RestoreResult


StartupDone = Claimed | SourcesReady | Restored


@dataclass(frozen=True)
class StartupFailed:
    step: str  # "claim", "sources" or "restore": for the messages
    error: BaseException


@dataclass(frozen=True)
class IdentityKnown:
    """The instance's identity (from IMDS), to be bound to every later log event."""

    fields: dict[str, Any] = field(default_factory=dict)


Event = (
    SignalReceived
    | NoticeReceived
    | SyncDone
    | SyncFailed
    | PendingMeasured
    | Claimed
    | SourcesReady
    | Restored
    | StartupFailed
    | IdentityKnown
)
