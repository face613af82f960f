"""Pure functions from a metadata response body to notices.

The formats EC2 uses, and the ways they can be malformed, are tested without HTTP. See
docs/notices.md for what the agent does with each kind of notice.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import structlog

from .notice import INTERRUPTION, REBALANCE, SCHEDULED, Notice, utcnow
from .protocol import (
    INSTANCE_ACTION,
    INTERRUPTING_CODES,
    REBALANCE_PATH,
    SCHEDULED_PATH,
    SPOT_WARNING,
    TERMINATION_TIME,
    month_number,
)

_EC2_TIME = re.compile(r"^(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d{1,2}):(\d{2}):(\d{2}) (?:GMT|UTC)$")


def parse_time(value: object) -> datetime | None:
    """ISO 8601 (``2026-11-23T12:00:00Z``) or EC2's event format (``21 Jan 2019 09:00:43 GMT``)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    match = _EC2_TIME.match(text)
    if match:
        day, month, year, hour, minute, second = match.groups()
        number = month_number(month)
        if number is None:
            return None
        try:
            return datetime(
                int(year), number, int(day), int(hour), int(minute), int(second), tzinfo=UTC
            )
        except ValueError:
            return None
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"  # fromisoformat accepts "Z" only from Python 3.11
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _load_json(body: str) -> Any:
    """The decoded body, or None when it is not JSON (the callers log what that means)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def parse_instance_action(body: str, now: datetime | None = None) -> Notice:
    """``spot/instance-action``: EC2 serves this path only once an interruption is scheduled.

    So even an unreadable body means an interruption is coming: we assume the standard
    two-minute warning from now. Acting early costs a checkpoint and a retry; ignoring it
    would lose everything since the last checkpoint.
    """
    now = now or utcnow()
    data = _load_json(body)
    if not isinstance(data, dict):
        structlog.get_logger().warning(
            "imds_malformed_notice", path=INSTANCE_ACTION, body=body[:200]
        )
        return Notice(
            kind=INTERRUPTION,
            source="imds:spot",
            action="terminate",
            deadline=now + SPOT_WARNING,
            received=now,
            detail={"malformed": True, "raw": body[:500]},
        )
    action = data.get("action")
    action = action.strip().lower() if isinstance(action, str) and action.strip() else "terminate"
    deadline = parse_time(data.get("time"))
    if deadline is None:
        structlog.get_logger().warning("imds_malformed_notice", path=INSTANCE_ACTION, field="time")
        deadline = now + SPOT_WARNING
    # Planned from the time sent, whatever the action. A time already in the past stays as
    # is (EC2 documents hibernation as starting at once): the run loop then acts at once.
    return Notice(
        kind=INTERRUPTION,
        source="imds:spot",
        action=action,
        deadline=deadline,
        received=now,
        detail=data,
    )


def parse_termination_time(body: str, now: datetime | None = None) -> Notice:
    """Legacy ``spot/termination-time``: a bare timestamp, present only when terminating."""
    now = now or utcnow()
    deadline = parse_time(body)
    if deadline is None:
        structlog.get_logger().warning(
            "imds_malformed_notice", path=TERMINATION_TIME, body=body[:200]
        )
        deadline = now + SPOT_WARNING  # same reasoning as for instance-action
    return Notice(
        kind=INTERRUPTION,
        source="imds:spot",
        action="terminate",
        deadline=deadline,
        received=now,
        detail={"termination-time": body.strip()[:200]},
    )


def parse_rebalance(body: str, now: datetime | None = None) -> Notice:
    """``events/recommendations/rebalance``: an early warning, whatever the body says."""
    now = now or utcnow()
    data = _load_json(body)
    if not isinstance(data, dict):
        structlog.get_logger().warning(
            "imds_malformed_notice", path=REBALANCE_PATH, body=body[:200]
        )
        data = {"malformed": True, "raw": body[:500]}
    return Notice(
        kind=REBALANCE,
        source="imds:rebalance",
        action="rebalance",
        deadline=None,
        received=now,
        detail=data,
    )


def parse_scheduled(body: str, now: datetime | None = None) -> list[Notice]:
    """``events/maintenance/scheduled``: one notice per active event.

    A malformed list yields nothing: unlike instance-action, its presence says nothing
    (EC2 serves ``[]`` when there is no event), and stopping a multi-day job on a guess
    would cost more than the hours or days of warning scheduled events come with.
    """
    now = now or utcnow()
    data = _load_json(body)
    if not isinstance(data, list):
        structlog.get_logger().warning(
            "imds_malformed_notice", path=SCHEDULED_PATH, body=body[:200]
        )
        return []
    notices = []
    for event in data:
        if not isinstance(event, dict) or not isinstance(event.get("Code"), str):
            structlog.get_logger().warning("imds_malformed_event", entry=repr(event)[:200])
            continue
        if str(event.get("State", "active")).lower() != "active":
            continue  # completed or canceled
        # EventId names the event; without one, its code and start do.
        event_id = event.get("EventId")
        if not isinstance(event_id, str) or not event_id:
            event_id = f"{event['Code']}@{event.get('NotBefore')}"
        notices.append(
            Notice(
                kind=SCHEDULED,
                source="imds:scheduled",
                action=event["Code"],
                deadline=parse_time(event.get("NotBefore")),
                received=now,
                detail=event,
                event_id=event_id,
            )
        )
    return notices


def scheduled_is_interruption(
    notice: Notice, window_seconds: float, now: datetime | None = None
) -> bool:
    """True for a stop or retirement due within ``window_seconds`` (or overdue).

    An event without a readable NotBefore cannot be placed in the window, so it is not one.
    """
    if notice.action not in INTERRUPTING_CODES:
        return False
    left = notice.seconds_left(now or utcnow())
    return left is not None and left <= window_seconds


def scheduled_is_stale(notice: Notice, now: datetime | None = None) -> bool:
    """An event still shown as active although its whole window (NotAfter) has passed:
    EC2 did what it meant to do, or gave up; acting on it now would stop a healthy job."""
    ends = parse_time(notice.detail.get("NotAfter"))
    return ends is not None and ends <= (now or utcnow())
