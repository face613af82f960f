"""Structured logs: structlog configured once, one JSON object per line.

The pipeline is a list of small processors (``processors.py``): the level, a UTC ISO
timestamp, the bound context (job_id, attempt ...: bound once, carried by every event),
exception text, redaction of credentials, and the key order. Its end is the sink
(``writer.py``), which renders the event (``render.py``: JSON, or a console layout for a
person at a terminal) and writes it whole, under the lock the child's pass-through shares
(``childio.py``); when a log group is set, a JSON copy goes to CloudWatch Logs
(``cloudwatch.py``), with the Embedded Metric Format block on events that carry metrics
(``emf.py``). ``resources.py`` samples the job's process tree.

The state of all this is one :class:`LogSetup`, owned here and configured once at start;
other modules use the functions below, never its insides.

Import paths: ``agent.logs`` (this API), ``agent.logs.childio.ChildOutput``,
``agent.logs.cloudwatch.open_logs``, ``agent.logs.resources.start_sampler``.
"""

from __future__ import annotations

# ruff: noqa: E402 - structlog is imported under _console_extras_hidden, before the rest
import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

#: what structlog imports if installed, for features the agent does not use: rich (with
#: pygments and attrs) for structlog.dev's console and structlog.tracebacks' reprs
CONSOLE_EXTRAS = ("rich",)


@contextlib.contextmanager
def _console_extras_hidden() -> Iterator[None]:
    """Within, :data:`CONSOLE_EXTRAS` are not found (a ``None`` in ``sys.modules`` makes
    an import raise ImportError), unless already loaded; after, they import as usual.

    Where rich is installed next to the agent (typer and many other CLIs bring it),
    importing structlog imports it, and pygments and attrs through it: 60 ms here, a
    tenth of a warm restart's time before the job starts. The agent renders its own lines
    (``render.py``) and formats exceptions as plain text (``format_exc_info``), so it
    uses none of them. Where rich is absent (the image), this changes nothing.
    """
    hidden = [name for name in CONSOLE_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


with _console_extras_hidden():
    import structlog
from structlog.typing import EventDict, Processor

from .. import __version__
from .processors import FIRST_KEYS, REDACTED, BoundContext, Redactor, order_keys
from .render import ConsoleRenderer, child_line_prefix, json_string, terminal_width
from .writer import LogSink, Shipper, Writer, fileno, to_sink

__all__ = [
    "FIRST_KEYS",
    "LEVELS",
    "REDACTED",
    "Shipper",
    "attach",
    "bind_static",
    "child_prefix",
    "configure",
    "context",
    "get_logger",
    "json_string",
    "output_fd",
    "redact",
    "redact_text",
    "reset_static",
    "set_known_secrets",
    "shipper",
    "shutdown",
    "write_line",
    "write_raw",
]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip
#: files a container runtime leaves in the root: docker (and ECS, Batch), podman
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")


class LogSetup:
    """Everything the logs hold: one per process, configured once at start."""

    def __init__(self) -> None:
        self.context = BoundContext()
        self.redactor = Redactor()
        self.writer = Writer()  # process-wide, like the descriptors it locks
        self.sink = LogSink(sys.stdout, self.writer)

    def configure(self, stream: TextIO, fmt: str, level: str, color: bool) -> None:
        sink = LogSink(stream, self.writer)
        if choose_console(fmt, stream):
            fd = fileno(stream)
            sink.render = ConsoleRenderer(
                self.context.snapshot,
                color=color and _isatty(stream),
                width=lambda: terminal_width(fd),
            )
        self.sink = sink
        processors: list[Processor] = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            self.context,
            structlog.processors.format_exc_info,
            self.redactor,
            order_keys,
            to_sink,
        ]
        structlog.configure(
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
            logger_factory=lambda *_args: sink,
            cache_logger_on_first_use=False,
        )


_setup = LogSetup()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def choose_console(
    fmt: str,
    stream: TextIO,
    *,
    stdin: TextIO | None = None,
    pid: int | None = None,
    markers: tuple[str, ...] = CONTAINER_MARKERS,
) -> bool:
    """``console``, or ``auto`` for a person at a terminal: stdin and stdout are terminals,
    and the agent is neither PID 1 nor in a container. ``docker run -t``, ECS
    pseudoTerminal and Kubernetes ``tty: true`` give a container a terminal while its
    output still feeds a log pipeline that parses JSON: there, ``auto`` keeps JSON."""
    if fmt != "auto":
        return fmt == "console"
    at_terminal = _isatty(stream) and _isatty(stdin or sys.stdin)
    in_container = (pid or os.getpid()) == 1 or any(Path(p).exists() for p in markers)
    return at_terminal and not in_container


def configure(
    stream: TextIO | None = None,
    *,
    json: bool | None = None,
    fmt: str = "auto",
    level: str = "info",
    color: bool = True,
) -> None:
    """Configure structlog for the agent. ``fmt`` is json, console or auto (see
    :func:`choose_console`); ``json=True/False`` is the older spelling of json/console.
    ``level`` is debug, info, warning or error; ``color`` is only used by console."""
    if json is not None:
        fmt = "json" if json else "console"
    _setup.configure(stream or sys.stdout, fmt, level, color)
    bind_static(agent_version=__version__)


def get_logger(name: str = "agent") -> Any:
    return structlog.get_logger(name)


# -- the bound context and the known secrets ----------------------------------------------


def bind_static(**fields: Any) -> None:
    """Fields every later event carries (job_id, attempt, instance id ...), from any thread."""
    _setup.context.bind(**fields)


def reset_static() -> None:
    _setup.context.clear()


def context() -> Mapping[str, Any]:
    """The bound fields now (read-only)."""
    return _setup.context.snapshot()


def set_known_secrets(values: Iterable[str]) -> None:
    """Exact values to mask wherever they appear (``config.secret_values``)."""
    _setup.redactor.set_known(values)


def redact_text(text: str) -> str:
    return _setup.redactor.text(text)


def redact(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    """The redaction processor, as configured (for tests and other chains)."""
    return _setup.redactor(logger, method, event_dict)


# -- output -------------------------------------------------------------------------------


def write_line(text: str, stream: TextIO | None = None) -> None:
    """One whole line on ``stream`` (default: the configured stdout). Never raises."""
    _setup.writer.write_line(text, stream or _setup.sink.stream)


def write_raw(fd: int, *parts: bytes | memoryview) -> bool:
    """The job's bytes, unchanged, on ``fd``, between whole events. False if it failed."""
    return _setup.writer.write_raw(fd, *parts)


def output_fd() -> int:
    """The descriptor events are written to (the pass-through of the child's stdout shares it)."""
    return fileno(_setup.sink.stream)


def child_prefix(stream: str, timestamp: str) -> str:
    """The start of a ``child.output`` event (see :func:`render.child_line_prefix`)."""
    return child_line_prefix(_setup.context.json_fragment(), stream, timestamp)


# -- CloudWatch attachment -----------------------------------------------------------------


def attach(found: Shipper | None) -> None:
    """Send a copy of every later event (and the child's lines) to ``found``."""
    _setup.sink.shipper = found


def shipper() -> Shipper | None:
    return _setup.sink.shipper


def shutdown(timeout: float) -> None:
    """Stop shipping: flush what is queued within ``timeout`` seconds, then report."""
    found, _setup.sink.shipper = _setup.sink.shipper, None
    if found is not None:
        found.close(timeout)
