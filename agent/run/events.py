"""What can happen to a run, as types: every thread and signal handler posts one of these
onto the loop's one queue, and the loop dispatches on them with ``match``.

Times are ``time.monotonic()`` seconds, taken where the thing happened (a signal in its
handler, a notice when its source posted it), never when the loop got round to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from checkpoint.engine.save.sync import SyncResult

from ..notices import Notice
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
class StartupDone:
    """A start-up step finished in its worker: ``claim``, ``sources`` or ``restore``."""

    step: str
    value: Any


@dataclass(frozen=True)
class StartupFailed:
    step: str
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
    | StartupDone
    | StartupFailed
    | IdentityKnown
)
