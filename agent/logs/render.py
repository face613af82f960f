"""Renderers: an event dict becomes one line of text.

- :func:`render_json`: one JSON object per line, for log pipelines (the default).
- :class:`ConsoleRenderer`: for a person at a terminal. The context (job id, attempt,
  instance ...) is shown once, when it is first bound or changes, not on every line; each
  agent line is marked ``spot-agent ▸`` so it stands apart from the job's own output, and
  sizes and durations read as ``1.2 MB`` and ``0.3 s``. Lines of info events are cut to the
  terminal's width (80 columns when it cannot be asked); warnings and errors are kept
  whole, since a person must read them. Colour only when asked for (the caller honours
  NO_COLOR).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from structlog.typing import EventDict

#: JSON text of a str (ASCII only, like json.dumps): the C function, no per-call overhead
json_string = json.encoder.encode_basestring_ascii

MARK = "spot-agent ▸"
DEFAULT_WIDTH = 80
#: fields a console line never shows (the timestamp is the terminal's business)
_HIDDEN = frozenset({"timestamp", "level", "event"})
#: shown as the bare value: "1.2 MB", "0.3 s"
_BARE = frozenset({"bytes", "seconds"})
_SHORT_NAMES = {"sequence": "seq"}
#: what a person looks for first in a line, when the event has it; the rest keep their order
_HEADLINE = ("sequence", "files", "bytes", "seconds", "elapsed", "seconds_left", "exit_code")
#: the context line: who this is, then the rest
_CONTEXT_FIRST = (
    "job_id",
    "attempt",
    "instance_id",
    "instance_type",
    "availability_zone",
    "lifecycle",
)
_COLORS = {"dim": "2", "info": "36", "warning": "33", "error": "31", "critical": "31"}


def render_json(event_dict: Mapping[str, Any]) -> str:
    return json.dumps(event_dict, default=repr)


def child_line_prefix(context_fragment: str, stream: str, timestamp: str) -> str:
    """The start of a ``child.output`` event (the same shape as the agent's own events),
    up to the value of ``line``: add the JSON string of the line, extra fields and '}'."""
    return (
        f'{{"timestamp": "{timestamp}", "level": "info", "event": "child.output", '
        + (context_fragment + ", " if context_fragment else "")
        + f'"stream": "{stream}", "line": '
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _is_bytes(key: str) -> bool:
    return key == "bytes" or key.startswith("bytes_") or key.endswith("_bytes")


def _is_seconds(key: str) -> bool:
    return key in ("seconds", "elapsed") or key.endswith("_seconds") or key == "seconds_left"


def console_value(key: str, value: Any) -> str:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and _is_bytes(key):
        return human_bytes(value)
    if number and _is_seconds(key):
        return f"{value:.1f} s" if value >= 0.1 or value == 0 else f"{value:.3f} s"
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else json.dumps(value)
    return json.dumps(value, default=repr, separators=(",", ":"))


class ConsoleRenderer:
    """Compact lines for a terminal; the bound context once, when it changes."""

    def __init__(
        self,
        context: Callable[[], Mapping[str, Any]],
        *,
        color: bool = False,
        width: Callable[[], int] = lambda: DEFAULT_WIDTH,
    ) -> None:
        self._context = context
        self._color = color
        self._width = width
        self._shown: dict[str, Any] = {}

    def __call__(self, event_dict: EventDict) -> str:
        context = dict(self._context())
        lines = []
        if context != self._shown and context:
            self._shown = context
            words = " ".join(
                f"{k}={console_value(k, v)}" for k, v in _first(context, _CONTEXT_FIRST)
            )
            lines.append(f"{self._paint('dim', MARK)} {words}")
        lines.append(self._line(event_dict, context))
        return "\n".join(lines)

    def _line(self, event_dict: EventDict, context: Mapping[str, Any]) -> str:
        level = str(event_dict.get("level", "info"))
        event = str(event_dict.get("event", ""))
        words: list[str] = []
        for key, value in _first(event_dict, _HEADLINE):
            if key in _HIDDEN or (key in context and context[key] == value):
                continue
            text = console_value(key, value)
            words.append(text if key in _BARE else f"{_SHORT_NAMES.get(key, key)}={text}")
        head = event if level in ("info", "debug") else f"{level}: {event}"
        plain = " ".join([MARK, head, *words])
        width = self._width()
        if level in ("info", "debug") and len(plain) > width:
            plain = plain[: width - 1] + "…"
        if not self._color:
            return plain
        rest = plain[len(MARK) + 1 + len(head) :]
        return f"{self._paint('dim', MARK)} {self._paint(level, head)}{rest}"

    def _paint(self, style: str, text: str) -> str:
        if not self._color:
            return text
        code = _COLORS.get(style, _COLORS["info"])
        return f"\x1b[{code}m{text}\x1b[0m"


def _first(fields: Mapping[str, Any], keys: tuple[str, ...]) -> list[tuple[str, Any]]:
    """``fields`` as pairs, ``keys`` (those present) first."""
    head = [(k, fields[k]) for k in keys if k in fields]
    return head + [(k, v) for k, v in fields.items() if k not in keys]


def terminal_width(fd: int) -> int:
    """Columns of the terminal on ``fd``; :data:`DEFAULT_WIDTH` when it is not one."""
    try:
        return os.get_terminal_size(fd).columns or DEFAULT_WIDTH
    except OSError:
        return DEFAULT_WIDTH
