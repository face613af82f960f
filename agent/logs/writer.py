"""Where events leave the process: one writer per process, and the structlog logger.

:class:`Writer` owns one lock per output descriptor. The agent's events and the pass-
through of the job's stdout (``childio``) both write through it, so an event is written
whole and never lands in the middle of one of the job's lines.

:class:`LogSink` is the end of the structlog chain: it renders the finished event for
stdout (JSON or console) and, when a shipper is attached, hands a JSON copy with its EMF
block to CloudWatch. EMF is only in that copy: stdout stays readable, and a log group fed
by the awslogs driver from stdout would otherwise count metrics twice. An event logged
with ``_local=True`` goes to stdout only (the reports about shipping logs, so that a broken
CloudWatch endpoint does not feed itself events about its failures).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from structlog.typing import EventDict

from . import emf
from .render import render_json


class Shipper(Protocol):
    """Where the CloudWatch copy goes (:class:`agent.logs.cloudwatch.CloudWatchLogs`)."""

    group: str

    def accepting(self) -> bool: ...

    def offer(self, message: str) -> None: ...

    def offer_many(self, messages: list[str]) -> None: ...

    def drop(self, count: int) -> None: ...

    def close(self, timeout: float) -> None: ...


def fileno(stream: Any) -> int:
    """``stream``'s descriptor; for a stream without one (a test's StringIO), a negative
    number of its own, so it still gets a lock of its own."""
    try:
        return int(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return -1 - id(stream)


class Writer:
    """Whole lines and raw bytes on descriptors, one lock per descriptor."""

    def __init__(self) -> None:
        self._locks: dict[int, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._mid_line: set[int] = set()  # descriptors the job left an unfinished line on

    def lock(self, fd: int) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(fd, threading.Lock())

    def write_line(self, text: str, stream: TextIO) -> None:
        """``text`` and a newline on ``stream``, whole. Never raises."""
        fd = fileno(stream)
        with self.lock(fd):
            if fd in self._mid_line:  # end the job's unfinished line first: an event is a line
                self._mid_line.discard(fd)
                text = "\n" + text
            try:
                stream.write(text + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stdout must not stop the job

    def write_raw(self, fd: int, *parts: bytes | memoryview) -> bool:
        """The job's bytes, unchanged, on ``fd``, between whole events (``parts`` in one
        go, without joining them first). False if it failed."""
        views = [memoryview(p) for p in parts if len(p)]
        if not views:
            return True
        with self.lock(fd):
            if views[-1][-1] == 0x0A:
                self._mid_line.discard(fd)
            else:
                self._mid_line.add(fd)
            try:
                while views:
                    n = os.writev(fd, views)
                    while views and n >= len(views[0]):
                        n -= len(views[0])
                        views.pop(0)
                    if views and n:
                        views[0] = views[0][n:]
            except OSError:
                return False
        return True


class LogSink:
    """The structlog logger of the agent: stdout and, when attached, CloudWatch."""

    def __init__(
        self, stream: TextIO, writer: Writer, render: Callable[[EventDict], str] = render_json
    ) -> None:
        self.stream = stream
        self.writer = writer
        self.render = render
        self.shipper: Shipper | None = None

    def msg(self, event_dict: EventDict) -> None:
        local = bool(event_dict.pop("_local", False))
        shipper = self.shipper
        if shipper is not None and not local:
            shipper.offer(render_json(emf.embed(dict(event_dict), {"LogGroup": shipper.group})))
        self.writer.write_line(self.render(event_dict), self.stream)

    debug = info = warning = warn = error = critical = exception = fatal = msg


def to_sink(
    _logger: Any, _method: str, event_dict: EventDict
) -> tuple[tuple[EventDict], dict[str, Any]]:
    """The last processor: hand the finished dict to :meth:`LogSink.msg` unrendered, so
    each destination renders it its own way."""
    return (event_dict,), {}
