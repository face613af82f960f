"""Interruption notices: one type, many sources, handled once.

Every source (IMDS spot instance-action, rebalance recommendation, scheduled maintenance,
SIGTERM from the platform) produces a :class:`Notice` and posts it onto the run loop's one
event queue. :class:`NoticeBoard` de-duplicates: the first interruption wins and later ones
(the same notice polled again, or SIGTERM after an IMDS notice) are only recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from checkpoint._fsutil import write_atomic

#: Kinds of notice. An *interruption* stops the job; a *rebalance* only asks for a sync;
#: a *scheduled* event asks for a sync and is documented in docs/notices.md.
INTERRUPTION = "interruption"
REBALANCE = "rebalance"
SCHEDULED = "scheduled"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Notice:
    """What a source saw.

    ``deadline`` is when the platform will act (UTC, for logs and the notice file);
    ``deadline_monotonic`` is the same moment on ``time.monotonic()``, computed once when the
    notice arrived, so that a wall-clock step (NTP) never moves the deadline of a shutdown in
    progress. ``event_id`` names the event the notice is about, when the source knows it
    (a scheduled event's EventId and phase): notices with the same id are one notice.
    """

    kind: str  # INTERRUPTION, REBALANCE or SCHEDULED
    source: str  # "sigterm", "imds:spot", "imds:rebalance", "imds:scheduled"
    action: str  # "terminate", "stop", "hibernate", "rebalance", "system-reboot", ...
    deadline: datetime | None
    received: datetime = field(default_factory=utcnow)
    detail: dict[str, Any] = field(default_factory=dict, compare=False)
    event_id: str = ""
    deadline_monotonic: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.deadline is not None and self.deadline_monotonic is None:
            left = (self.deadline - utcnow()).total_seconds()
            object.__setattr__(self, "deadline_monotonic", time.monotonic() + left)

    @property
    def is_interruption(self) -> bool:
        return self.kind == INTERRUPTION

    def seconds_left(self, now: datetime | float | None = None) -> float | None:
        """Until the deadline: on the monotonic clock, unless ``now`` is a wall-clock time
        (the parsers place events relative to a given moment)."""
        if self.deadline is None:
            return None
        if isinstance(now, datetime):
            return (self.deadline - now).total_seconds()
        assert self.deadline_monotonic is not None
        return self.deadline_monotonic - (time.monotonic() if now is None else now)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "action": self.action,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "received": self.received.isoformat(),
            "detail": self.detail,
        }


def sigterm_notice(grace_seconds: float, received_monotonic: float | None = None) -> Notice:
    """SIGTERM from ECS, Fargate Spot, Kubernetes or ``docker stop``: the grace period runs
    from when it arrived (``time.monotonic()`` in the signal handler), not from when it is
    handled."""
    now_mono = time.monotonic()
    arrived = now_mono if received_monotonic is None else min(received_monotonic, now_mono)
    received = utcnow() - timedelta(seconds=now_mono - arrived)
    return Notice(
        kind=INTERRUPTION,
        source="sigterm",
        action="terminate",
        deadline=received + timedelta(seconds=grace_seconds),
        received=received,
        deadline_monotonic=arrived + grace_seconds,
    )


class NoticeSource(Protocol):
    """A source runs in its own thread until ``stop`` is set, posting what it sees."""

    name: str

    def run(self, post: Callable[[Notice], None], stop: threading.Event) -> None: ...


class NoticeBoard:
    """Remembers what was handled so each notice is acted on once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.interruption: Notice | None = None
        self._seen: set[tuple[str, ...]] = set()

    def accept(self, notice: Notice) -> bool:
        """True if the run loop should act on this notice, False if it is a repeat."""
        with self._lock:
            if self.interruption is not None:
                # Already shutting down. Only a notice that moves the deadline closer matters
                # (an IMDS notice, then the platform's SIGTERM with a shorter grace period).
                if notice.is_interruption and _sooner(notice, self.interruption):
                    self.interruption = notice
                    return True
                return False
            if notice.is_interruption:
                self.interruption = notice
                return True
            key = _identity(notice)
            if key in self._seen:
                return False
            self._seen.add(key)
            return True


def _identity(notice: Notice) -> tuple[str, ...]:
    """The event a notice is about: its id when the source named one, else what it said."""
    if notice.event_id:
        return (notice.kind, notice.source, notice.event_id)
    return (
        notice.kind,
        notice.source,
        notice.action,
        notice.deadline.isoformat() if notice.deadline else "",
        json.dumps(notice.detail, sort_keys=True, default=str),
    )


def _sooner(new: Notice, current: Notice) -> bool:
    new_left, current_left = new.seconds_left(), current.seconds_left()
    if new_left is None:
        return False
    return current_left is None or new_left < current_left


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by its owner only (0600); not
    flushed to disk: the runtime dir does not outlive the agent."""
    write_atomic(path, text.encode(), fsync=False)


def write_notice_file(path: Path, notice: Notice) -> None:
    """Publish the notice for the child, atomically (it may be polling for the file)."""
    write_private_file(path, json.dumps(notice.to_json(), indent=2) + "\n")
