"""The job's stdout and stderr: passed through unchanged, and turned into events.

What an operator on ``docker logs`` (or the awslogs driver) wants is the job's own output,
as if the agent were not there, with the agent's few JSON events between its lines. So
``--child-output`` (``SPOT_AGENT_CHILD_OUTPUT``) decides, and its default is ``raw``:

=======  =========================================  ======================================
mode     agent's stdout / stderr                    CloudWatch (with ``--log-group``)
=======  =========================================  ======================================
raw      the job's bytes, unchanged, on the same    one ``child.output`` event per line
         stream; the agent's events on stdout
json     no raw bytes: one ``child.output`` JSON    the same events
         event per line on stdout (all JSON: for
         a log pipeline that parses every line)
both     the raw bytes and the events (debugging)   the same events
=======  =========================================  ======================================

In ``raw`` mode without a log group nothing reads the job's output: it inherits the
agent's descriptors, costs nothing and still sees a terminal if there is one.

A ``child.output`` event has ``stream`` ("stdout" or "stderr") and ``line`` (the line
without its newline, decoded as UTF-8 with invalid bytes shown as ``\\xNN``). A line
longer than ``MAX_LINE`` bytes keeps its first ``MAX_LINE`` bytes in the event and says
``"truncated": true, "line_bytes": N``; the pass-through still carries every byte, and
memory stays bounded whatever the job prints. A last line without a newline is an event
too, when the job closes its output.

When the agent reads the job's output (a log group, or ``json``/``both``), the agent's
events are written as whole lines, under a lock the pass-through of stdout shares, and the
pass-through writes the job's stdout up to its last newline: so an event never splits one
of the job's lines. (In ``raw`` mode without a log group the job keeps the agent's own
stdout, at no cost; an event, one write of a whole line, can then fall between two writes
of a line the job writes in pieces, as Python's print does when unbuffered.)
An unfinished line (a prompt, a progress bar) is held back at most ``IDLE_FLUSH``
seconds, or ``MAX_LINE`` bytes; if an event must follow it, the event starts on a new
line (the one byte the agent adds to the job's stdout).

Each stream has one reader thread that reads large chunks and passes them through, so
the job's own order is kept per stream. Turning lines into events is another thread's
work, fed through a backlog bounded in bytes (``backlog_bytes``, 32 MiB). When the events only go
to CloudWatch and that thread falls behind (a flood of output), chunks past the bound
get no events, counted as lost: the job is never held up for CloudWatch. When events go
to stdout (``json``, ``both``), the reader waits instead, as the job would on a slow
stdout. And while the shipper cannot take events (its queue full, its endpoint hung or
failing: ``CloudWatchLogs.accepting``), lines are only counted, not made into events, so
that a dead endpoint costs the pass-through nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import sys
import threading
import time
from typing import Any

from .. import logs
from .lines import BACKLOG_BYTES, MAX_LINE, Backlog, LineSplitter, render_lines

#: the default of ``ChildOutput(read_size=...)``: one read of a pipe, at most
READ_SIZE = 256 * 1024
PIPE_SIZE = 1024 * 1024
IDLE_FLUSH = 0.1

__all__ = ["BACKLOG_BYTES", "MAX_LINE", "ChildOutput", "LineSplitter", "render_lines"]

log = logs.get_logger()


class ChildOutput:
    """Pipes for the job's stdout/stderr and the threads that pump them.

    ``read_size``: the most bytes one read of a pipe takes; ``backlog_bytes``: the bound on
    output read but not yet made into events.
    """

    def __init__(
        self, mode: str, *, read_size: int = READ_SIZE, backlog_bytes: int = BACKLOG_BYTES
    ) -> None:
        self.mode = mode
        self.read_size = read_size
        self.shipper = logs.shipper()
        self.events_to_stdout = mode in ("json", "both")
        self.passthrough = mode in ("raw", "both")
        self.evented = self.events_to_stdout or self.shipper is not None
        self.piped = self.evented
        self._backlog = Backlog(backlog_bytes)
        self._pipes: dict[str, tuple[int, int]] = {}
        self._threads: list[threading.Thread] = []
        self.lines = {"stdout": 0, "stderr": 0}
        self.truncated = 0
        self.dropped = 0
        self.passthrough_failed = 0
        self._closed = False

    def child_streams(self) -> dict[str, int]:
        """``stdout``/``stderr`` arguments for :class:`agent.process.supervisor.Child`."""
        if not self.piped:
            return {}
        for name in ("stdout", "stderr"):
            r, w = os.pipe()
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # fewer wake-ups, fewer stalls
            os.set_inheritable(w, True)
            self._pipes[name] = (r, w)
        return {name: w for name, (_r, w) in self._pipes.items()}

    def start(self) -> None:
        """After the job started: close our copies of the write ends, start reading."""
        targets = {"stdout": logs.output_fd(), "stderr": _fileno(sys.stderr)}
        for name, (r, w) in self._pipes.items():
            os.close(w)
            thread = threading.Thread(
                target=self._pump,
                args=(name, r, targets[name] if self.passthrough else None, name == "stdout"),
                name=f"child-{name}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        if self._pipes and self.evented:
            thread = threading.Thread(
                target=self._events, args=(len(self._pipes),), name="child-events", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def abandon(self) -> None:
        """The job never started: close both ends."""
        for r, w in self._pipes.values():
            for fd in (r, w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._pipes.clear()

    def close(self, timeout: float) -> None:
        """Wait (bounded) until the job's output is read to its end."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        if not self._threads or self._closed:
            return
        self._closed = True
        still = [t.name for t in self._threads if t.is_alive()]
        log.info(
            "child.output_closed",
            stdout_lines=self.lines["stdout"],
            stderr_lines=self.lines["stderr"],
            truncated_lines=self.truncated,
            **({"lines_without_event": self.dropped} if self.dropped else {}),
            **({"still_open": still} if still else {}),
            **({"passthrough_failed": True} if self.passthrough_failed else {}),
        )

    # -- one reader thread per stream, one thread for events ----------------------------

    def _pump(self, stream: str, fd: int, target: int | None, whole_lines: bool) -> None:
        held = b""  # pass-through bytes after the last newline, until the line ends
        skipped, unfinished = 0, False  # lines counted while the shipper took nothing
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        try:
            while True:
                if held and not poller.poll(IDLE_FLUSH * 1000):
                    self._write(target, held)
                    held = b""
                    continue
                try:
                    data = os.read(fd, self.read_size)
                except OSError:
                    break
                if not data:
                    break
                if target is not None:
                    if whole_lines:
                        cut = data.rfind(b"\n") + 1
                        if cut:  # the held line's start and what ends it, in one write
                            whole = data if cut == len(data) else memoryview(data)[:cut]
                            self._write(target, held, whole)
                            held = data[cut:]
                        else:
                            held += data
                        if len(held) > MAX_LINE:
                            self._write(target, held)
                            held = b""
                    else:
                        self._write(target, data)
                if not self.evented:
                    continue
                if self._shipper_only_and_full():
                    # Nobody can take events now: count the lines here, without waking
                    # the events thread for each chunk (its wake-ups cost the pass-through).
                    skipped += data.count(b"\n")
                    unfinished = not data.endswith(b"\n")
                    continue
                if skipped:  # lines are counted where their newline is: a line cut short
                    self._backlog.put(stream, None, wait=False, gap=skipped)  # goes on
                skipped, unfinished = 0, False
                if not self._backlog.put(stream, data, wait=self.events_to_stdout):
                    # Too far behind: these lines get no events (the bytes passed through).
                    ended = data.count(b"\n")
                    if ended:
                        self._backlog.put(stream, None, wait=False, gap=ended)
        finally:
            if held and target is not None:
                self._write(target, held)
            if self.evented:
                if skipped or unfinished:
                    self._backlog.put(stream, None, wait=False, gap=skipped + unfinished)
                self._backlog.put(stream, None, wait=False)  # end of this stream
            with contextlib.suppress(OSError):
                os.close(fd)

    def _write(self, target: int | None, *data: bytes | memoryview) -> None:
        if target is not None and not logs.write_raw(target, *data):
            self.passthrough_failed += 1

    def _events(self, streams: int) -> None:
        splitters = {"stdout": LineSplitter(), "stderr": LineSplitter()}
        while streams:
            stream, data, gap = self._backlog.get()
            splitter = splitters[stream]
            if data is None and not gap:
                streams -= 1
            try:
                full = self._shipper_only_and_full()
                if data is not None and full:
                    # Making events nobody can take would only burn the CPU (and the GIL)
                    # the pass-through needs: count these lines as lost, as CloudWatch would.
                    skipped = splitter.skip(data)
                    self.lines[stream] += skipped
                    self._lost(skipped)
                elif data is not None:
                    self._emit(stream, splitter.feed(data))
                else:  # a gap, or the end: first the line it cut short
                    last = splitter.finish()
                    if gap:  # that line's newline was among the gap's: counted there
                        last = []
                    if full:
                        self.lines[stream] += len(last)
                        self._lost(len(last))
                    else:
                        self._emit(stream, last)
                    self.lines[stream] += gap
                    self._lost(gap)
            except Exception as exc:  # keep draining: a reader may be waiting for room
                log.error("child.output_events_failed", error=repr(exc), _local=True)

    def _shipper_only_and_full(self) -> bool:
        return (
            not self.events_to_stdout and self.shipper is not None and not self.shipper.accepting()
        )

    def _lost(self, count: int) -> None:
        if count:
            self.dropped += count
            if self.shipper is not None:
                self.shipper.drop(count)

    def _emit(self, stream: str, lines: list[tuple[bytes, int]]) -> None:
        if not lines:
            return
        self.lines[stream] += len(lines)
        events = render_lines(stream, lines)
        self.truncated += sum(1 for head, n in lines if n > len(head))
        if self.events_to_stdout:
            logs.write_line("\n".join(events))
        if self.shipper is not None:
            self.shipper.offer_many(events)


def _fileno(stream: Any) -> int:
    try:
        return int(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return 2
