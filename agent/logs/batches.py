"""A bounded queue of log events, cut into PutLogEvents batches at the service's limits.

CloudWatch Logs' PutLogEvents takes, in one call:

- at most ``MAX_BATCH_EVENTS`` (10,000) events;
- at most ``MAX_BATCH_BYTES`` (1,048,576) bytes, counted as the UTF-8 size of each
  message plus ``EVENT_OVERHEAD`` (26) bytes per event;
- events in time order, spanning at most ``MAX_BATCH_SPAN_MS`` (24 hours);
- events of at most 256 KiB each, overhead included (:func:`fit` makes any event fit).

Events are stamped when they are queued, never earlier than the previous one (a clock
that steps back must not break the order), so the queue is in time order and a batch is
always its head. The queue is bounded in events and bytes: what does not fit is refused
and the caller counts it.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any

from .processors import FIRST_KEYS

EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD
MAX_BATCH_BYTES = 1_048_576
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_SPAN_MS = 24 * 3600 * 1000


def fit(message: str, limit: int = MAX_EVENT_BYTES) -> str:
    """``message`` if it fits in one event; else a visible stand-in that does."""
    size = len(message.encode("utf-8"))
    if size <= limit:
        return message
    try:
        original = json.loads(message)
    except ValueError:
        original = {}
    keep = {k: original[k] for k in FIRST_KEYS if isinstance(original, dict) and k in original}
    budget = limit - 1024
    while True:
        doc = {**keep, "truncated": True, "original_bytes": size, "head": message[:budget]}
        text = json.dumps(doc)
        if len(text.encode("utf-8")) <= limit:
            return text
        budget //= 2


class EventQueue:
    """Events waiting for the sender: ``put_many`` never waits, ``next_batch`` does."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.events = 0
        self.bytes = 0
        self.closed = False
        self._items: collections.deque[tuple[int, str, int]] = collections.deque()
        self._cond = threading.Condition()
        self._last_ts = 0

    def has_room(self) -> bool:
        return not self.closed and self.events < self.max_events and self.bytes < self.max_bytes

    def put_many(self, sized: list[tuple[str, int]]) -> int:
        """Queue ``(message, size)`` pairs in order; how many fitted (the rest, refused,
        are the last ones: what is queued keeps the order it was offered in)."""
        with self._cond:
            ts = max(int(time.time() * 1000), self._last_ts)
            self._last_ts = ts
            taken = 0
            for message, size in sized:
                if self.closed or self.events >= self.max_events:
                    break
                if self.bytes + size > self.max_bytes:
                    break
                self._items.append((ts, message, size))
                self.events += 1
                self.bytes += size
                taken += 1
            # Wake the sender when its linger clock starts (the queue was empty) or a
            # full batch waits; not on every event: there may be millions.
            if taken and (self.events == taken or self._full_batch_waiting()):
                self._cond.notify_all()
            return taken

    def close(self) -> None:
        """Take nothing more; :meth:`next_batch` hands out what is left, then None."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def next_batch(self, linger: float) -> list[dict[str, Any]] | None:
        """The next batch, once a full one is waiting, events have waited ``linger``
        seconds, or the queue is closed; None when closed and empty."""
        with self._cond:
            deadline: float | None = None
            while True:
                if self._items and (self.closed or self._full_batch_waiting()):
                    break
                if not self._items:
                    if self.closed:
                        return None
                    deadline = None
                    self._cond.wait()
                    continue
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + linger
                if now >= deadline:
                    break
                self._cond.wait(deadline - now)
            return self._cut()

    def _full_batch_waiting(self) -> bool:
        return (
            self.events >= MAX_BATCH_EVENTS
            or self.bytes + EVENT_OVERHEAD * self.events >= MAX_BATCH_BYTES
        )

    def _cut(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        size = 0
        first = self._items[0][0]
        while self._items and len(batch) < MAX_BATCH_EVENTS:
            ts, message, n = self._items[0]
            if size + n + EVENT_OVERHEAD > MAX_BATCH_BYTES or ts - first >= MAX_BATCH_SPAN_MS:
                break
            self._items.popleft()
            size += n + EVENT_OVERHEAD
            self.events -= 1
            self.bytes -= n
            batch.append({"timestamp": ts, "message": message})
        return batch
