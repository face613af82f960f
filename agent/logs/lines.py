"""The job's output as lines and ``child.output`` events, in bounded memory.

:class:`LineSplitter` cuts bytes into lines, keeping at most ``MAX_LINE`` bytes of each
(the length of the whole line is still known); :func:`render_lines` makes the events, on a
fast path past structlog (a job may print millions of lines); :class:`Backlog` holds
chunks read but not yet turned into events, bounded in bytes.
"""

from __future__ import annotations

import collections
import threading
from datetime import UTC, datetime

from .. import logs

MAX_LINE = 64 * 1024
#: bytes read but not yet turned into events; beyond it, lines get no event (counted)
BACKLOG_BYTES = 32 * 1024 * 1024


class LineSplitter:
    """Bytes in, whole lines out as ``(head, length)``: ``head`` is at most ``cap`` bytes,
    ``length`` the line's full length without its newline. Memory stays within ``cap``."""

    def __init__(self, cap: int = MAX_LINE) -> None:
        self.cap = cap
        self._head = bytearray()
        self._length = 0  # of the unfinished line, including bytes not kept

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        parts = data.split(b"\n")
        tail = parts.pop()
        cap = self.cap
        lines: list[tuple[bytes, int]] = []
        if parts and self._length:
            self._add(parts[0])
            lines.append(self._take())
            parts = parts[1:]
        lines += [(p, len(p)) if len(p) <= cap else (p[:cap], len(p)) for p in parts]
        self._add(tail)
        return lines

    def skip(self, data: bytes) -> int:
        """Take ``data`` without making lines of it; the number of lines it ended."""
        ended = data.count(b"\n")
        if ended:
            self._head.clear()
            self._length = 0
            tail = data[data.rfind(b"\n") + 1 :]
        else:
            tail = data
        self._add(tail)
        return ended

    def finish(self) -> list[tuple[bytes, int]]:
        """The last line, if the output ended without a newline."""
        return [self._take()] if self._length else []

    def _add(self, data: bytes) -> None:
        room = self.cap - len(self._head)
        if room > 0:
            self._head += data[:room]
        self._length += len(data)

    def _take(self) -> tuple[bytes, int]:
        line = (bytes(self._head), self._length)
        self._head.clear()
        self._length = 0
        return line


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def render_lines(stream: str, lines: list[tuple[bytes, int]]) -> list[str]:
    """``child.output`` events (JSON text) for ``lines`` read at one moment."""
    prefix = logs.child_prefix(stream, _now_iso())
    quote = logs.json_string
    events = []
    for head, length in lines:
        text = head.decode("utf-8", "backslashreplace")
        if text.endswith("\r"):
            text = text[:-1]
        if length > len(head):
            events.append(f'{prefix}{quote(text)}, "truncated": true, "line_bytes": {length}}}')
        else:
            events.append(prefix + quote(text) + "}")
    return events


class Backlog:
    """Chunks read but not yet turned into events, bounded in bytes.

    ``put`` either waits for room (when events go to stdout: the job then waits as it
    would on a slow stdout) or refuses (CloudWatch only: the job must not wait for it)."""

    def __init__(self, limit: int = BACKLOG_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self._items: collections.deque[tuple[str, bytes | None, int]] = collections.deque()
        self._cond = threading.Condition()

    def put(self, stream: str, data: bytes | None, *, wait: bool, gap: int = 0) -> bool:
        n = len(data) if data else 0
        with self._cond:
            while n and self.size + n > self.limit:
                if not wait:
                    return False
                self._cond.wait()
            self._items.append((stream, data, gap))
            self.size += n
            self._cond.notify_all()
        return True

    def get(self) -> tuple[str, bytes | None, int]:
        with self._cond:
            while not self._items:
                self._cond.wait()
            item = self._items.popleft()
            self.size -= len(item[1]) if item[1] else 0
            self._cond.notify_all()
            return item
