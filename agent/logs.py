"""Structured logs: structlog configured once, one JSON object per line.

Each concern is one processor: the level, a UTC ISO timestamp, the job's identity (bound
once, so every event carries job_id and attempt), and the renderer (JSON, or a console
renderer for a person at a terminal).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from . import __version__

_static: dict[str, Any] = {}
_static_lock = threading.Lock()


def bind_static(**fields: Any) -> None:
    """Fields every later event carries (job_id, attempt, instance id ...), from any thread."""
    with _static_lock:
        _static.update({k: v for k, v in fields.items() if v is not None})


def add_static(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for key, value in _static.items():
        event_dict.setdefault(key, value)
    return event_dict


_FIRST = ("timestamp", "level", "event", "job_id", "attempt")


def order_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Put the fields a person scans for first; the rest keep their order."""
    ordered = {k: event_dict.pop(k) for k in _FIRST if k in event_dict}
    ordered.update(event_dict)
    return ordered


def configure(stream: TextIO | None = None, *, json: bool | None = None) -> None:
    """Configure structlog for the agent. JSON unless ``stream`` is a terminal."""
    out = stream or sys.stdout
    if json is None:
        json = not out.isatty()
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_static,
            structlog.processors.format_exc_info,
            order_keys,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    bind_static(agent_version=__version__)


def reset_static() -> None:
    with _static_lock:
        _static.clear()


def get_logger(name: str = "agent") -> Any:
    return structlog.get_logger(name)
