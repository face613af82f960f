"""The emulator's state: notices, scheduled events, tokens and fault knobs.

All times are wall-clock seconds (``time.time()``), as IMDS's own timestamps are.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.notices.parsers import parse_time
from agent.notices.protocol import (
    EVENT_CODES,
    EVENT_STATES,
    MAX_TOKEN_TTL,
    SPOT_ACTIONS,
    event_time,
    iso_time,
)

from . import tree

#: What EC2 prefixes to an event's description once it is no longer active.
_STATE_PREFIX = {"completed": "[Completed] ", "canceled": "[Canceled] "}
#: how far past NotBefore an event may be rescheduled (its NotBeforeDeadline)
_RESCHEDULE = timedelta(days=7)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(served: object) -> float | None:
    """An event time as served (``21 Jan 2019 09:00:43 GMT``), in seconds; None if absent."""
    when = parse_time(served)
    return None if when is None else when.timestamp()


class MockState:
    """Everything the emulator serves and every fault it injects, behind one lock."""

    def __init__(self, *, require_token: bool = True, token_ttl_max: int = MAX_TOKEN_TTL) -> None:
        self.require_token = require_token
        self.token_ttl_max = token_ttl_max
        self.user_data: str | None = tree.DEFAULT_USER_DATA
        self._lock = threading.Lock()
        self._started = time.time()
        self._tokens: dict[str, float] = {}
        self._notice: tuple[float, str, float] | None = None  # (appears at, action, time)
        self._rebalance_at: float | None = None
        self._events: list[dict[str, Any]] = []
        self._fail_count = 0
        self._fail_status = 500
        self._delay = 0.0
        self._throttle_every = 0
        self._answers = 0
        self._outage_until = 0.0
        self._outage_status = 503
        self._hop_limit_1 = False
        #: a spot notice (interruption or rebalance) was posted or planned: the instance
        #: is a spot one (``instance-life-cycle``); until then an on-demand one, as AEMM's
        self._spot = False

    # -- notices -------------------------------------------------------------------------

    def post_interruption(self, action: str = "terminate", in_seconds: float = 120) -> None:
        """From now on instance-action says ``action`` happens in ``in_seconds``.

        Whatever the action, hibernate included: AWS's own mock (ec2-metadata-mock) serves
        ``time`` = now + 2 minutes for every action, and the agent plans from the ``time``
        it is sent. Rehearse an immediate hibernation with ``in_seconds=0``.
        """
        self._schedule_interruption(time.time(), action, in_seconds)

    def _schedule_interruption(self, appears: float, action: str, lead: float) -> None:
        if action not in SPOT_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(SPOT_ACTIONS)}, got {action!r}")
        with self._lock:
            self._notice = (appears, action, appears + lead)
            self._spot = True

    def post_rebalance(self) -> None:
        with self._lock:
            self._rebalance_at = time.time()
            self._spot = True

    def add_scheduled_event(
        self,
        code: str = "system-reboot",
        in_seconds: float = 86400,
        *,
        duration: float = 7200,
        state: str = "active",
        description: str | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Add an event whose NotBefore is ``in_seconds`` from now; returns it as served."""
        now = time.time()
        event = self.complete_event(
            {
                "Code": code,
                "Description": description,
                "EventId": event_id,
                "NotBefore": event_time(_at(now + in_seconds)),
                "NotAfter": event_time(_at(now + in_seconds + duration)),
                "State": state,
            }
        )
        with self._lock:
            self._events.append(event)
        return event

    @staticmethod
    def complete_event(event: dict[str, Any]) -> dict[str, Any]:
        """``event`` with every field EC2 serves, missing ones made up plausibly."""
        now = time.time()
        code = event.get("Code") or "system-reboot"
        state = event.get("State") or "active"
        if code not in EVENT_CODES:
            raise ValueError(f"code must be one of {', '.join(EVENT_CODES)}, got {code!r}")
        if state not in EVENT_STATES:
            raise ValueError(f"state must be one of {', '.join(EVENT_STATES)}, got {state!r}")
        description = event.get("Description") or f"The instance is scheduled for {code}"
        return {
            "Code": code,
            "Description": _STATE_PREFIX.get(state, "") + description,
            "EventId": event.get("EventId") or f"instance-event-{uuid.uuid4().hex[:17]}",
            "NotBefore": event.get("NotBefore") or event_time(_at(now + 86400)),
            "NotAfter": event.get("NotAfter") or event_time(_at(now + 86400 + 7200)),
            "State": state,
            # The latest start the event can be rescheduled to: EC2 serves it with the
            # events one may reschedule, AEMM with every event; a week after NotBefore.
            "NotBeforeDeadline": event.get("NotBeforeDeadline")
            or event_time(_at(_epoch(event.get("NotBefore")) or now + 86400) + _RESCHEDULE),
        }

    def clear(self) -> None:
        """Remove every notice and event and end fault injection; tokens stay valid."""
        with self._lock:
            self._notice = None
            self._rebalance_at = None
            self._events = []
            self._fail_count = 0
            self._delay = 0.0
            self._throttle_every = 0
            self._outage_until = 0.0
            self._hop_limit_1 = False

    # -- fault knobs ---------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` metadata requests (token PUTs included) with ``status``."""
        with self._lock:
            self._fail_count, self._fail_status = n, status

    def delay(self, seconds: float) -> None:
        """Hold every metadata response ``seconds`` before answering (0 to stop)."""
        with self._lock:
            self._delay = seconds

    def throttle(self, every: int) -> None:
        """Answer every ``every``-th metadata request with 429, as a busy IMDS (0: off)."""
        with self._lock:
            self._throttle_every, self._answers = max(every, 0), 0

    def outage(self, seconds: float, status: int = 503) -> None:
        """Answer every metadata request with ``status`` for the next ``seconds``."""
        with self._lock:
            self._outage_until, self._outage_status = time.time() + seconds, status

    def hop_limit_1(self, on: bool = True) -> None:
        """Never deliver token PUT replies, as a hop limit of 1 does inside a container."""
        with self._lock:
            self._hop_limit_1 = on

    def drop_tokens(self) -> None:
        """Forget every token, as an IMDS restart does: their next use gets 401."""
        with self._lock:
            self._tokens.clear()

    def take_fault(self, *, token_request: bool) -> tuple[int | None, float, bool]:
        """(status to fail with or None, delay, never answer) for one metadata request."""
        with self._lock:
            self._answers += 1
            status = None
            if self._fail_count > 0:
                self._fail_count -= 1
                status = self._fail_status
            elif time.time() < self._outage_until:
                status = self._outage_status
            elif self._throttle_every and self._answers % self._throttle_every == 0:
                status = 429
            return status, self._delay, token_request and self._hop_limit_1

    # -- what is served ------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "instance_action": self._instance_action(time.time()),
                "rebalance": self._rebalance_at is not None,
                "scheduled": list(self._events),
                "live_tokens": len(self._tokens),
                "fail_next": self._fail_count,
                "delay": self._delay,
                "throttle_every": self._throttle_every,
                "outage_seconds_left": max(0.0, round(self._outage_until - time.time(), 1)),
                "hop_limit_1": self._hop_limit_1,
            }

    def _instance_action(self, now: float) -> dict[str, str] | None:
        if self._notice is None or now < self._notice[0]:
            return None
        return {"action": self._notice[1], "time": iso_time(_at(self._notice[2]))}

    def metadata(self, path: str) -> str | None:
        """The body served at ``path``, or None for 404."""
        now = time.time()
        with self._lock:
            spot = self._instance_action(now)
            rebalance_at = self._rebalance_at
            events = list(self._events)
            spot_instance = self._spot
        rebalance = None
        if rebalance_at is not None and now >= rebalance_at:
            rebalance = f'{{"noticeTime": "{iso_time(_at(rebalance_at))}"}}'
        served = tree.metadata_tree(
            started=_at(self._started),
            now=_at(now),
            spot=spot,
            rebalance=rebalance,
            scheduled=events,
            user_data=self.user_data,
            life_cycle="spot" if spot_instance else "on-demand",
        )
        return tree.lookup(served, path)

    def issue_token(self, ttl_header: str | None) -> tuple[int, str]:
        try:
            ttl = int(ttl_header or "")
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= self.token_ttl_max:
            return 400, f"Bad Request: the token TTL must be 1..{self.token_ttl_max} seconds\n"
        token = secrets.token_urlsafe(42)
        with self._lock:
            self._tokens[token] = time.time() + ttl
        return 200, token

    def token_seconds_left(self, token: str | None) -> int | None:
        """The token's remaining lifetime; None when it is unknown or expired."""
        if token is None:
            return None
        with self._lock:
            expires = self._tokens.get(token)
        left = None if expires is None else int(expires - time.time())
        return left if left is not None and left > 0 else None

    def token_ok(self, token: str | None) -> bool:
        if token is None:
            return not self.require_token
        # A wrong token is refused even when IMDSv1 is allowed, as on EC2.
        return self.token_seconds_left(token) is not None
