"""The emulator's state: the spot notices and scheduled events it serves, and the metadata
tree they appear in; with its tokens (:mod:`.tokens`) and fault knobs (:mod:`.faults`).

All times are wall-clock seconds (``time.time()``), as IMDS's own timestamps are.
"""

from __future__ import annotations

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
from .faults import Faults
from .tokens import Tokens

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


class MockState(Faults, Tokens):
    """Everything the emulator serves, behind one lock; tokens and faults have their own."""

    def __init__(self, *, require_token: bool = True, token_ttl_max: int = MAX_TOKEN_TTL) -> None:
        Faults.__init__(self)
        Tokens.__init__(self, require_token=require_token, token_ttl_max=token_ttl_max)
        self.user_data: str | None = tree.DEFAULT_USER_DATA
        self._lock = threading.Lock()
        self._started = time.time()
        self._notice: tuple[float, str, float] | None = None  # (appears at, action, time)
        self._rebalance_at: float | None = None
        self._events: list[dict[str, Any]] = []
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
        self.clear_faults()

    # -- what is served ------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            served = {
                "instance_action": self._instance_action(time.time()),
                "rebalance": self._rebalance_at is not None,
                "scheduled": list(self._events),
            }
        return {**served, "live_tokens": self.live_tokens(), **self.fault_state()}

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
