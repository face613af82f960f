"""The IMDS notice source: availability as a state, polling, de-duplication, back-off.

The source never decides at start that IMDS is gone for good: it keeps trying with a
back-off of a few seconds at most (the whole spot warning is two minutes), says once when
polling starts, and keeps polling through errors. It never raises and never stalls long.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import structlog

from .client import ImdsClient
from .failures import ImdsUnavailable
from .notice import REBALANCE, Notice, utcnow
from .parsers import parse_instance_action, parse_rebalance, parse_scheduled, parse_termination_time
from .phases import scheduled_phases
from .protocol import (
    IDENTITY_PATHS,
    INSTANCE_ACTION,
    REBALANCE_PATH,
    SCHEDULED_PATH,
    TERMINATION_TIME,
)


def _log() -> Any:
    return structlog.get_logger()  # looked up per call: tests capture logs after import


@dataclass
class Reading:
    """What one poll read. ``rebalance`` and ``scheduled`` stay None when the poll failed
    before their path: an unread path says nothing about whether a notice went away."""

    candidates: list[tuple[str, Notice]] = field(default_factory=list)
    rebalance: bool | None = None
    error: Exception | None = None


class ImdsSource:
    """Polls IMDS for notices and posts each new one once.

    - spot instance-action (or the legacy termination-time): an interruption;
    - rebalance: posted when it appears (AEMM serves a new ``noticeTime`` on every request,
      so its body cannot identify it), at most once per ``rebalance_every`` seconds;
    - scheduled events, by EventId: posted when first seen; a stop or retirement due within
      ``scheduled_window`` seconds is posted again as an interruption (an overdue one gets
      the spot warning's two minutes from when it is seen, a stale one is ignored); a reboot
      is posted again ``reboot_lead`` seconds before its NotBefore, for a fresh checkpoint.
    """

    name = "imds"

    def __init__(
        self,
        client: ImdsClient,
        interval: float = 2.0,
        scheduled_window: float = 600.0,
        *,
        max_backoff: float = 3.0,
        log_every: float = 300.0,
        rebalance_every: float = 60.0,
        reboot_lead: float = 300.0,
        required: bool = False,
        on_identity: Callable[[dict[str, str | None]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.interval = interval
        self.scheduled_window = scheduled_window
        self.max_backoff = max(max_backoff, interval)
        self.log_every = log_every
        self.rebalance_every = rebalance_every
        self.reboot_lead = reboot_lead
        self.required = required
        self.on_identity = on_identity
        self._clock = clock
        self.available = False
        self.failures = 0
        self._posted: set[str] = set()
        self._rebalance_shown = False
        self._rebalance_posted_at: float | None = None
        self._rebalances = 0
        self._stale_logged: set[str] = set()
        self._failures_log = FailureLog(client.endpoint, required, log_every, clock)

    # -- reading ---------------------------------------------------------------------------

    def poll_once(self) -> list[Notice]:
        """Every notice IMDS shows now. Raises :class:`ImdsUnavailable` when it cannot tell."""
        reading = self._read()
        if reading.error is not None:
            raise reading.error
        return [notice for _key, notice in reading.candidates]

    def _read(self) -> Reading:
        """What IMDS shows, path by path, the spot notice first. A failing path ends the
        poll (when the service is down, one failure per poll is enough) but never hides
        what was read before it: a spot notice is posted even if events/ answers 403."""
        reading = Reading()
        now = utcnow()
        try:
            reading.candidates.extend(self._spot(now))
            body = self.client.get(REBALANCE_PATH)
            reading.rebalance = body is not None
            if body is not None:
                reading.candidates.append(("rebalance", parse_rebalance(body, now)))
            body = self.client.get(SCHEDULED_PATH)
            for event in parse_scheduled(body, now) if body is not None else []:
                reading.candidates.extend(self._scheduled(event, now))
        except Exception as exc:
            reading.error = exc
        return reading

    def _spot(self, now: datetime) -> list[tuple[str, Notice]]:
        body = self.client.get(INSTANCE_ACTION)
        if body is None:
            body = self.client.get(TERMINATION_TIME)
            notice = None if body is None else parse_termination_time(body, now)
        else:
            notice = parse_instance_action(body, now)
        if notice is None:
            return []
        # From what IMDS said, not from the deadline: a malformed notice's deadline is
        # derived from the time it was read and would change on every poll.
        return [("spot:" + json.dumps(notice.detail, sort_keys=True, default=str), notice)]

    def _scheduled(self, event: Notice, now: datetime) -> list[tuple[str, Notice]]:
        phases = scheduled_phases(
            event, now, window=self.scheduled_window, reboot_lead=self.reboot_lead
        )
        if phases.stale:
            self._log_stale(event)
        return phases.notices

    # -- the loop ----------------------------------------------------------------------------

    def run(self, post: Callable[[Notice], None], stop: threading.Event) -> None:
        while not stop.is_set():
            started = self._clock()
            delay = self.interval
            try:
                if not self.available:
                    self._become_available()
                reading = self._read()
                self._post_new(reading, post)
                if reading.error is not None:
                    raise reading.error
                if self.failures:
                    _log().info("imds_recovered", after_failures=self.failures)
                self.failures = 0
                # Polls start every `interval` seconds, however long one took (throttled
                # answers retried within it, say): the poll period is the promised one.
                delay = max(0.0, self.interval - (self._clock() - started))
            except Exception as exc:  # a notice source must never kill the agent
                self.failures += 1
                delay = min(self.max_backoff, self.interval * 2**self.failures)
                self._failures_log.report(exc, delay, available=self.available)
            stop.wait(delay)

    def _become_available(self) -> None:
        """Raises until the service answers; then says so once and hands out the identity."""
        identity: dict[str, str | None] = {}
        for name, path in IDENTITY_PATHS.items():
            try:
                identity[name] = self.client.get(path)
            except ImdsUnavailable:
                if name == "instance_id":
                    raise  # not answering yet
                identity[name] = None
        self.available = True
        self.failures = 0
        _log().info(
            "imds.polling",
            endpoint=self.client.endpoint,
            interval=self.interval,
            imds_v1=self.client.using_v1,
        )
        if self.on_identity is not None:
            self.on_identity(identity)

    def _post_new(self, reading: Reading, post: Callable[[Notice], None]) -> None:
        if reading.rebalance is False:
            self._rebalance_shown = False  # gone: a later one is a new recommendation
        first_seen = {key for key, _ in reading.candidates if key not in self._posted}
        for key, notice in reading.candidates:
            if notice.kind == REBALANCE:
                self._post_rebalance(notice, post)
            elif key in self._posted:
                continue
            elif key.endswith(":before-start") and key.rsplit(":", 1)[0] in first_seen:
                self._posted.add(key)  # first seen this close: its first checkpoint is it
            else:
                post(notice)
                self._posted.add(key)  # only once posted: a failed post is retried

    def _post_rebalance(self, notice: Notice, post: Callable[[Notice], None]) -> None:
        if self._rebalance_shown:
            return
        now = self._clock()
        last = self._rebalance_posted_at
        if last is None or now - last >= self.rebalance_every:
            post(replace(notice, event_id=f"rebalance-{self._rebalances + 1}"))
            self._rebalances += 1
            self._rebalance_posted_at = now
        else:
            _log().info(
                "imds.rebalance_skipped",
                why=f"one rebalance checkpoint per {self.rebalance_every:g} s",
                seconds_ago=round(now - last, 1),
            )
        self._rebalance_shown = True

    def _log_stale(self, event: Notice) -> None:
        if event.event_id not in self._stale_logged:
            self._stale_logged.add(event.event_id)
            _log().warning(
                "imds.scheduled_stale",
                code=event.action,
                event_id=event.event_id,
                not_after=event.detail.get("NotAfter"),
                action_taken="none: its window has passed",
            )


class FailureLog:
    """While IMDS never answered: say so (loudly every minute when it is required). Once
    it has: each kind of failure at most once per ``log_every`` seconds."""

    def __init__(
        self, endpoint: str, required: bool, log_every: float, clock: Callable[[], float]
    ) -> None:
        self.endpoint = endpoint
        self.required = required
        self.log_every = log_every
        self._clock = clock
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, exc: Exception, retry_in: float, *, available: bool) -> None:
        kind = exc.kind if isinstance(exc, ImdsUnavailable) else type(exc).__name__
        reason = str(exc) or type(exc).__name__
        now = self._clock()
        if not available:
            last = self._last_logged.get("unavailable")
            if last is None or (self.required and now - last >= 60.0):
                self._last_logged["unavailable"] = now
                (_log().error if self.required else _log().warning)(
                    "imds.unavailable",
                    endpoint=self.endpoint,
                    kind=kind,
                    reason=reason,
                    notices="SIGTERM only, until the metadata service answers",
                    required=self.required,
                )
            return
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.log_every:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_logged[kind] = now
        _log().warning(
            "imds_poll_failed",
            kind=kind,
            reason=reason,
            retry_in=retry_in,
            suppressed=self._suppressed.pop(kind, 0),
            # Expected outages need no traceback; anything else is a bug worth one.
            exc_info=None if isinstance(exc, ImdsUnavailable) else exc,
        )
