"""The small structlog processors: bound context, redaction, key order.

Each is a plain ``(logger, method, event_dict) -> event_dict`` callable. The two that hold
state (the bound context, the known secrets) are objects owned by the package's one
:class:`agent.logs.LogSetup`, never module globals.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from structlog.typing import EventDict, WrappedLogger

#: the fields a person scans for first, in this order; the rest keep theirs
FIRST_KEYS = ("timestamp", "level", "event", "job_id", "attempt")


class BoundContext:
    """Fields every later event carries (job_id, attempt, instance id ...).

    Copy-on-write: :meth:`bind` builds a new mapping and swaps it in under a lock, so a
    thread that logs reads one whole snapshot and never a dict being changed under it
    (a stress run once hit 'dictionary changed size during iteration')."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fields: Mapping[str, Any] = MappingProxyType({})
        self._fragment: tuple[Mapping[str, Any], str] | None = None

    def bind(self, **fields: Any) -> None:
        with self._lock:
            new = dict(self._fields)
            new.update({k: v for k, v in fields.items() if v is not None})
            self._fields = MappingProxyType(new)

    def clear(self) -> None:
        with self._lock:
            self._fields = MappingProxyType({})

    def snapshot(self) -> Mapping[str, Any]:
        """The fields now: a read-only mapping that no later bind changes."""
        return self._fields

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        for key, value in self._fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    def json_fragment(self) -> str:
        """The fields as the inside of a JSON object (job_id and attempt first), cached
        per snapshot: the child's lines take this fast path, and there may be millions."""
        fields = self._fields
        cached = self._fragment
        if cached is not None and cached[0] is fields:
            return cached[1]
        ordered = {k: fields[k] for k in ("job_id", "attempt") if k in fields}
        ordered.update(fields)
        text = json.dumps(ordered, default=repr)[1:-1]
        self._fragment = (fields, text)
        return text


def order_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Put :data:`FIRST_KEYS` first; the rest keep their order."""
    ordered = {k: event_dict.pop(k) for k in FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    return ordered


# -- redaction: no credential ever leaves the process in a log event -----------------------

REDACTED = "[REDACTED]"
_SECRET_WORDS = (
    r"secret|passw(?:or)?d|passphrase|token|credential|signature|api[_-]?key|private[_-]?key"
)
#: a name that says its value is a secret (an event key, a --flag, a NAME=value)
_SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)
#: AWS access key ids (long-term AKIA, temporary ASIA): 4 letters and 16 more
_ACCESS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")
#: --password=hunter2, PASSWORD=hunter2 inside a longer string (a URL query too: a presigned
#: URL's X-Amz-Signature, X-Amz-Credential, X-Amz-Security-Token, CloudFront's Signature)
_NAMED_VALUE = re.compile(
    rf"(?P<name>[A-Za-z0-9_.-]*(?:{_SECRET_WORDS})[A-Za-z0-9_.-]*)(?P<sep>=)"
    r"(?P<value>[^\s&,;'\"]+)",
    re.IGNORECASE,
)
#: a query parameter whose short name says signature (Azure's SAS ``sig``), only as one
_QUERY_SIG = re.compile(r"(?P<name>[?&;]sig=)(?P<value>[^\s&,;'\"#]+)", re.IGNORECASE)
#: the user name and password of a URL (scheme://user:password@host): both are masked
_URL_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://)[^/\s@?#'\"]+(?=@)", re.IGNORECASE)
#: the same user:password@ without its scheme, as an error message echoes a URI's parts
_USERINFO_PASSWORD = re.compile(r"(?<![\w:/])[\w.~%+-]+:[^/\s:@'\"]+(?=@[\w.-])")
#: event fields whose values are counts or codes, never secrets, despite their names
_NOT_SECRET_KEYS = frozenset({"token_status"})


class Redactor:
    """Masks AWS access key ids, values of fields and ``--flag=value`` / ``NAME=value``
    words whose names say secret, password, token, credential, signature or key (a
    presigned URL's query too, and its ``sig``), the user name and password of a URL, and
    the exact values given to :meth:`set_known` (the secret-looking environment)."""

    def __init__(self) -> None:
        self._known: tuple[str, ...] = ()

    def set_known(self, values: Iterable[str]) -> None:
        """Longest first, so that one never leaves part of another; a tuple swapped whole."""
        self._known = tuple(sorted({v for v in values if len(v) >= 6}, key=len, reverse=True))

    def text(self, text: str) -> str:
        for secret in self._known:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "@" in text:
            text = _URL_USERINFO.sub(lambda m: m["head"] + REDACTED, text)
            text = _USERINFO_PASSWORD.sub(REDACTED, text)
        if "sig=" in text.lower():
            text = _QUERY_SIG.sub(lambda m: m["name"] + REDACTED, text)
        text = _NAMED_VALUE.sub(
            lambda m: m["name"] + m["sep"] + (m["value"] if m["value"] == REDACTED else REDACTED),
            text,
        )
        return _ACCESS_KEY_ID.sub(lambda m: m[1] + REDACTED, text)

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        return {k: self._item(k, v) for k, v in event_dict.items()}

    def _item(self, key: Any, value: Any) -> Any:
        if (
            isinstance(key, str)
            and key not in _NOT_SECRET_KEYS
            and _SECRET_NAME.search(key)
            and isinstance(value, (str, bytes))
            and value
        ):
            return REDACTED
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._item(k, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            items = [self._value(v) for v in value]
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
