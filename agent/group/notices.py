"""Interruptions reach the whole group through the store.

An agent that sees an interruption itself (a spot notice, SIGTERM) writes it, create-only,
to ``<job>/group/notices/<rank>-<attempt>.json``. Every agent of the group lists
``<job>/group/notices/`` every couple of seconds and posts a peer's notice as an
interruption of its own, with the peer's deadline (the run loop keeps the earliest one), so
every job gets the notice file and the stop signal and all ranks save the same step.

A notice counts only when the store stored it after this agent's attempt (both times are
the store's own ``LastModified``, so no two machines' clocks are compared): a notice of an
earlier run of the group is not a notice for this one. One listing every two seconds is
1,800 requests per node per hour (docs/groups.md has the measured delay and cost).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from checkpoint.engine.format.jobstore import utc_iso
from checkpoint.engine.group import Group
from checkpoint.errors import CheckpointError

from .. import logs
from ..notices import INTERRUPTION, Notice, utcnow

log = logs.get_logger()

SOURCE_PREFIX = "group:"
MAX_NOTICE_BYTES = 64 << 10


def notice_body(notice: Notice, rank: int, attempt: int) -> bytes:
    doc: dict[str, Any] = {
        **notice.to_json(),
        "rank": rank,
        "attempt": attempt,
        "written": utc_iso(),
    }
    return json.dumps(doc, sort_keys=True).encode()


def parse_peer_notice(data: bytes) -> Notice | None:
    """A peer's notice as an interruption here, or None when the body is not one."""
    try:
        doc = json.loads(data)
        deadline = datetime.fromisoformat(doc["deadline"]) if doc.get("deadline") else None
        rank = int(doc["rank"])
        source = str(doc.get("source", "unknown"))
        action = str(doc.get("action", "terminate"))
    except (ValueError, KeyError, TypeError):
        return None
    if deadline is not None and deadline.tzinfo is None:
        return None
    return Notice(
        kind=INTERRUPTION,
        source=f"{SOURCE_PREFIX}rank{rank}:{source}",
        action=action,
        deadline=deadline,
        received=utcnow(),
        detail={"rank": rank, "written": doc.get("written")},
    )


class PeerNotices:
    """The notice source that watches the group's notices (a :class:`NoticeSource`)."""

    name = "group"

    def __init__(self, group: Group, rank: int, since: datetime | None, interval: float) -> None:
        self.group = group
        self.rank = rank
        self.since = since  # this attempt's start, on the store's clock
        self.interval = interval
        self.requests = 0
        self._seen: set[str] = set()
        self._failing = False

    def run(self, post: Callable[[Notice], None], stop: threading.Event) -> None:
        log.info("group.watching", rank=self.rank, every_seconds=self.interval)
        while not stop.is_set():
            self.look(post)
            stop.wait(self.interval)
        log.info("group.watch_ended", requests=self.requests)

    def look(self, post: Callable[[Notice], None]) -> None:
        prefix = self.group.notices_prefix()
        own = self.group.keys.notices_of(self.rank)
        try:
            self.requests += 1
            found = [
                o
                for o in self.group.store.list_objects(prefix)
                if o.key not in self._seen
                and not o.key.startswith(own)
                and (self.since is None or o.modified >= self.since)
            ]
            for obj in found:
                self._seen.add(obj.key)
                self.requests += 1
                notice = parse_peer_notice(
                    self.group.store.get_object(obj.key, max_bytes=MAX_NOTICE_BYTES)
                )
                if notice is None:
                    log.warning("group.notice_unreadable", key=obj.key)
                    continue
                post(notice)
        except CheckpointError as exc:
            if not self._failing:
                log.warning("group.watch_failed", error=str(exc), action="trying again")
            self._failing = True
            return
        if self._failing:
            log.info("group.watch_recovered")
        self._failing = False
