"""Structured logs: structlog configured once, one JSON object per line.

Each concern is one processor: the level, a UTC ISO timestamp, the job's identity (bound
once, so every event carries job_id and attempt), and the key order. The end of the chain
is :class:`Output`, the one place events leave the process:

- on stdout, JSON (or a console rendering for a person at a terminal), written whole
  under a lock that the child's pass-through shares (``agent/childio.py``), so an event
  never lands in the middle of one of the job's lines;
- credentials never leave: :func:`redact` masks AWS access key ids, values of fields and
  ``--flag=value`` / ``NAME=value`` words whose names say secret, password, token,
  credential or key, URL passwords, and the exact secret-looking environment values;
- when a log group is set, a JSON copy goes to CloudWatch Logs (``agent/cloudwatch.py``),
  with the Embedded Metric Format block added to the events that carry metrics
  (``agent/emf.py``). EMF is only in the CloudWatch copy: stdout stays readable, and a
  log group fed by the awslogs driver from stdout would otherwise count metrics twice.

An event logged with ``_local=True`` goes to stdout only (the reports about shipping logs,
so that a broken CloudWatch endpoint does not feed itself events about its failures).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from typing import Any, Protocol, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from . import __version__, emf

_static: dict[str, Any] = {}
_static_lock = threading.Lock()
_static_version = 0


def bind_static(**fields: Any) -> None:
    """Fields every later event carries (job_id, attempt, instance id ...), from any thread."""
    global _static_version
    with _static_lock:
        _static.update({k: v for k, v in fields.items() if v is not None})
        _static_version += 1


def add_static(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for key, value in _static.items():
        event_dict.setdefault(key, value)
    return event_dict


# -- redaction: no credential ever leaves the process in a log event -----------------------

REDACTED = "[REDACTED]"
#: a name that says its value is a secret (an event key, a --flag, a NAME=value)
_SECRET_NAME = re.compile(
    r"secret|passw(?:or)?d|passphrase|token|credential|api[_-]?key|private[_-]?key",
    re.IGNORECASE,
)
#: AWS access key ids (long-term AKIA, temporary ASIA): 4 letters and 16 more
_ACCESS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")
#: --password=hunter2, PASSWORD=hunter2 inside a longer string (a URL query too)
_NAMED_VALUE = re.compile(
    r"(?P<name>[A-Za-z0-9_.-]*(?:secret|passw(?:or)?d|passphrase|token|credential"
    r"|api[_-]?key|private[_-]?key)[A-Za-z0-9_.-]*)(?P<sep>=)(?P<value>[^\s&,;'\"]+)",
    re.IGNORECASE,
)
#: user:password@ in a URL
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?=@)", re.I)
#: event fields whose values are counts or codes, never secrets, despite their names
_NOT_SECRET_KEYS = frozenset({"token_status"})

_known_secrets: tuple[str, ...] = ()


def set_known_secrets(values: Any) -> None:
    """Exact values to mask wherever they appear (the secret-looking environment values:
    ``config.secret_values``). Longest first, so that one never leaves part of another."""
    global _known_secrets
    _known_secrets = tuple(sorted({v for v in values if len(v) >= 6}, key=len, reverse=True))


def redact_text(text: str) -> str:
    """``text`` with access key ids, named secrets, URL passwords and known secrets masked."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, text)
    text = _NAMED_VALUE.sub(
        lambda m: m["name"] + m["sep"] + (m["value"] if m["value"] == REDACTED else REDACTED),
        text,
    )
    return _ACCESS_KEY_ID.sub(lambda m: m[1] + REDACTED, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_redact_value(v) for v in value]
        # A command line's "--password hunter2": the word after a secret-named flag.
        for i in range(len(items) - 1):
            word = items[i]
            if (
                isinstance(word, str)
                and word.startswith("-")
                and "=" not in word
                and _SECRET_NAME.search(word)
                and isinstance(items[i + 1], str)
            ):
                items[i + 1] = REDACTED
        return items
    return value


def _redact_item(key: Any, value: Any) -> Any:
    if (
        isinstance(key, str)
        and key not in _NOT_SECRET_KEYS
        and _SECRET_NAME.search(key)
        and isinstance(value, (str, bytes))
        and value
    ):
        return REDACTED
    return _redact_value(value)


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Mask credentials in every field (and nested lists and dicts) of every event."""
    return {k: _redact_item(k, v) for k, v in event_dict.items()}


_FIRST = ("timestamp", "level", "event", "job_id", "attempt")


def order_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Put the fields a person scans for first; the rest keep their order."""
    ordered = {k: event_dict.pop(k) for k in _FIRST if k in event_dict}
    ordered.update(event_dict)
    return ordered


def to_output(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> tuple[tuple[EventDict], dict[str, Any]]:
    """Hand the finished event dict to :meth:`Output.msg`, which renders it per destination."""
    return (event_dict,), {}


class Shipper(Protocol):
    """Where the CloudWatch copy goes (``agent.cloudwatch.CloudWatchLogs``)."""

    group: str

    def offer(self, message: str) -> None: ...

    def offer_many(self, messages: list[str]) -> None: ...

    def drop(self, count: int) -> None: ...

    def close(self, timeout: float) -> None: ...


def _json(event_dict: EventDict) -> str:
    return json.dumps(event_dict, default=repr)


class Output:
    """The structlog logger of the agent: stdout and, when attached, CloudWatch."""

    def __init__(self, stream: TextIO, *, json_lines: bool) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.shipper: Shipper | None = None
        self._console = structlog.dev.ConsoleRenderer(colors=False)

    def msg(self, event_dict: EventDict) -> None:
        local = bool(event_dict.pop("_local", False))
        shipper = self.shipper
        if shipper is not None and not local:
            shipper.offer(_json(emf.embed(dict(event_dict), {"LogGroup": shipper.group})))
        text = _json(event_dict) if self.json_lines else self._console(None, "", event_dict)
        write_line(text, self.stream)

    debug = info = warning = warn = error = critical = exception = fatal = msg


_output: Output | None = None
#: one lock per output file descriptor: events and the child's pass-through share it
_fd_locks: dict[int, threading.Lock] = {}
#: descriptors where the child's pass-through left an unfinished line
_mid_line: set[int] = set()
_fd_locks_lock = threading.Lock()


def fd_lock(fd: int) -> threading.Lock:
    with _fd_locks_lock:
        return _fd_locks.setdefault(fd, threading.Lock())


def _fileno(stream: TextIO) -> int:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return -1 - id(stream)  # no descriptor (a test's StringIO): a lock of its own


def write_line(text: str, stream: TextIO | None = None) -> None:
    """One whole line on ``stream`` (default: the configured stdout). Never raises."""
    out = stream or (_output.stream if _output else sys.stdout)
    fd = _fileno(out)
    with fd_lock(fd):
        if fd in _mid_line:  # end the job's unfinished line first: an event is a line
            _mid_line.discard(fd)
            text = "\n" + text
        try:
            out.write(text + "\n")
            out.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stdout must not stop the job


def write_raw(fd: int, data: bytes) -> bool:
    """The child's bytes, unchanged, on ``fd``, between whole events. False if it failed."""
    if not data:
        return True
    view = memoryview(data)
    with fd_lock(fd):
        if data.endswith(b"\n"):
            _mid_line.discard(fd)
        else:
            _mid_line.add(fd)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            return False
    return True


def configure(stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Configure structlog for the agent. JSON unless ``stream`` is a terminal."""
    global _output
    out = stream or sys.stdout
    if json is None:
        json = not out.isatty()
    _output = Output(out, json_lines=json)
    processors: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_static,
        structlog.processors.format_exc_info,
        redact,
        order_keys,
        to_output,
    ]
    output = _output
    structlog.configure(
        processors=processors,
        logger_factory=lambda *_args: output,
        cache_logger_on_first_use=False,
    )
    bind_static(agent_version=__version__)


def output_fd() -> int:
    """The descriptor events are written to (the pass-through of the child's stdout shares it)."""
    return _fileno(_output.stream if _output else sys.stdout)


# -- CloudWatch attachment -----------------------------------------------------------------


def attach(shipper: Shipper | None) -> None:
    """Send a copy of every later event (and the child's lines) to ``shipper``."""
    if _output is not None:
        _output.shipper = shipper


def shipper() -> Shipper | None:
    return _output.shipper if _output else None


def shutdown(timeout: float) -> None:
    """Stop shipping: flush what is queued within ``timeout`` seconds, then report."""
    if _output is None or _output.shipper is None:
        return
    found, _output.shipper = _output.shipper, None
    found.close(timeout)


# -- the child's lines as events (a fast path past structlog: there may be millions) ------

_fragment: tuple[int, str] = (-1, "")


def _static_fragment() -> str:
    """The bound fields as the inside of a JSON object, cached until they change."""
    global _fragment
    version, text = _fragment
    if version != _static_version:
        with _static_lock:
            version = _static_version
            ordered: dict[str, Any] = {k: _static[k] for k in ("job_id", "attempt") if k in _static}
            ordered.update(_static)
        text = json.dumps(ordered, default=repr)[1:-1]
        _fragment = (version, text)
    return text


def child_line_prefix(stream: str, timestamp: str) -> str:
    """The start of ``child.output`` events (the same shape as the agent's own events),
    up to the value of ``line``: add the JSON string of the line, extra fields and '}'."""
    static = _static_fragment()
    return (
        f'{{"timestamp": "{timestamp}", "level": "info", "event": "child.output", '
        + (static + ", " if static else "")
        + f'"stream": "{stream}", "line": '
    )


#: JSON text of a str (ASCII only, like json.dumps): the C function, no per-call overhead
json_string = json.encoder.encode_basestring_ascii


def reset_static() -> None:
    global _static_version
    with _static_lock:
        _static.clear()
        _static_version += 1


def get_logger(name: str = "agent") -> Any:
    return structlog.get_logger(name)
