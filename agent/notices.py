"""Interruption notices: one type, many sources, handled once.

Every source (IMDS spot instance-action, rebalance recommendation, scheduled maintenance,
SIGTERM from the platform) produces a :class:`Notice` and posts it onto the runner's one
event queue. :class:`NoticeBoard` de-duplicates: the first interruption wins and later ones
(the same notice polled again, or SIGTERM after an IMDS notice) are only recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

#: Kinds of notice. An *interruption* stops the job; a *rebalance* only asks for a sync.
INTERRUPTION = "interruption"
REBALANCE = "rebalance"
SCHEDULED = "scheduled"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Notice:
    """What a source saw. ``deadline`` is when the platform will kill us (UTC)."""

    kind: str  # INTERRUPTION, REBALANCE or SCHEDULED
    source: str  # "sigterm", "imds:spot", "imds:rebalance", "imds:scheduled"
    action: str  # "terminate", "stop", "hibernate", "rebalance", "reboot", ...
    deadline: datetime | None
    received: datetime = field(default_factory=utcnow)
    detail: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_interruption(self) -> bool:
        return self.kind == INTERRUPTION

    def seconds_left(self, now: datetime | None = None) -> float | None:
        if self.deadline is None:
            return None
        return (self.deadline - (now or utcnow())).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "action": self.action,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "received": self.received.isoformat(),
            "detail": self.detail,
        }


def sigterm_notice(grace_seconds: float, received: datetime | None = None) -> Notice:
    """SIGTERM from ECS, Fargate Spot, Kubernetes or ``docker stop``: the grace period runs
    from when it was received (now, unless it came while the agent was starting)."""
    now = received or utcnow()
    return Notice(
        kind=INTERRUPTION,
        source="sigterm",
        action="terminate",
        deadline=now + timedelta(seconds=grace_seconds),
        received=now,
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
        """True if the runner should act on this notice, False if it is a repeat."""
        # What the source said identifies a notice (a new rebalance has a new noticeTime).
        key = (
            notice.kind,
            notice.source,
            notice.action,
            notice.deadline.isoformat() if notice.deadline else "",
            json.dumps(notice.detail, sort_keys=True, default=str),
        )
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
            if key in self._seen:
                return False
            self._seen.add(key)
            return True


def _sooner(new: Notice, current: Notice) -> bool:
    if new.deadline is None:
        return False
    return current.deadline is None or new.deadline < current.deadline


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by its owner only (0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a crash: O_EXCL below must create it anew
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_notice_file(path: Path, notice: Notice) -> None:
    """Publish the notice for the child, atomically (it may be polling for the file)."""
    write_private_file(path, json.dumps(notice.to_json(), indent=2) + "\n")
