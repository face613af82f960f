"""The phases of a scheduled event: what to post about it at a given moment, pure.

docs/notices.md has the table of what each event code makes the agent do.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from .notice import INTERRUPTION, Notice
from .parsers import scheduled_is_interruption, scheduled_is_stale
from .protocol import INTERRUPTING_CODES, REBOOT_CODES, SPOT_WARNING


@dataclass
class Phases:
    """``notices``: (key, notice) pairs, each key to be posted once; ``stale``: a stop or
    retirement still shown as active after its whole window passed."""

    notices: list[tuple[str, Notice]] = field(default_factory=list)
    stale: bool = False


def scheduled_phases(event: Notice, now: datetime, *, window: float, reboot_lead: float) -> Phases:
    """Every event is a checkpoint when first seen. Then:

    - a stop or retirement due within ``window`` seconds is an interruption due at its
      NotBefore; overdue but still active (EC2 may act any moment), it gets the spot
      warning's two minutes from ``now`` rather than an instant kill; stale, nothing;
    - a reboot is a second checkpoint ``reboot_lead`` seconds before its NotBefore.
    """
    key = "scheduled:" + event.event_id
    phases = Phases([(key, event)])
    left = event.seconds_left(now)
    if event.action in INTERRUPTING_CODES and scheduled_is_interruption(event, window, now):
        if scheduled_is_stale(event, now):
            phases.stale = True
        else:
            overdue = left is not None and left <= 0
            interruption = replace(
                event,
                kind=INTERRUPTION,
                deadline=now + SPOT_WARNING if overdue else event.deadline,
                deadline_monotonic=None,  # recomputed from the deadline, once, here
                event_id=event.event_id + ":interruption",
            )
            phases.notices.append((key + ":interruption", interruption))
    if event.action in REBOOT_CODES and left is not None and 0 < left <= reboot_lead:
        soon = replace(event, event_id=event.event_id + ":before-start")
        phases.notices.append((key + ":before-start", soon))
    return phases
