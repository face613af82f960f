"""ImdsSource's decisions with a scripted client: rebalance de-duplication and rate,
scheduled-event phases, overdue and stale events, monotonic deadlines, the settings."""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.config import ConfigError, load_settings
from agent.notices import (
    INTERRUPTION,
    REBALANCE,
    SCHEDULED,
    Notice,
    NoticeBoard,
    make_imds_source,
    sigterm_notice,
)
from agent.notices.client import ImdsClient
from agent.notices.imds import rebalance_every
from agent.notices.protocol import EVENT_CODES, REBALANCE_PATH, SCHEDULED_PATH
from agent.notices.source import ImdsSource

EP = "http://imds.test"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class ScriptedClient(ImdsClient):
    """Answers from ``script(path)``: a body, None (404), or an exception to raise."""

    def __init__(self, script: Callable[[str], str | Exception | None]) -> None:
        super().__init__(EP)
        self.script = script

    def get(self, path: str) -> str | None:
        answer = self.script(path)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Rounds(threading.Event):
    """A stop event set after ``rounds`` waits; ``each(n)`` runs before wait n returns."""

    def __init__(self, rounds: int, each: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.rounds, self.each, self.n = rounds, each, 0

    def wait(self, timeout: float | None = None) -> bool:
        self.n += 1
        if self.each:
            self.each(self.n)
        if self.n >= self.rounds:
            self.set()
        return self.is_set()


def run(source: ImdsSource, rounds: int, each: Callable[[int], None] | None = None) -> list[Notice]:
    posted: list[Notice] = []
    with capture_logs():
        source.run(posted.append, Rounds(rounds, each))
    return posted


# -- rebalance -------------------------------------------------------------------------


def aemm_rebalance(shown: Callable[[], bool]) -> Callable[[str], str | None]:
    """Like AEMM: a new noticeTime on every request while the recommendation is shown."""
    counter = itertools.count()

    def script(path: str) -> str | None:
        if path == REBALANCE_PATH and shown():
            return f'{{"noticeTime": "2026-11-23T12:00:{next(counter) % 60:02d}Z"}}'
        return "[]" if path == SCHEDULED_PATH else None

    return script


def test_a_rebalance_whose_body_changes_on_every_poll_is_one_notice() -> None:
    source = ImdsSource(ScriptedClient(aemm_rebalance(lambda: True)))
    posted = run(source, rounds=15)
    assert [n.kind for n in posted] == [REBALANCE]
    board = NoticeBoard()
    assert board.accept(posted[0])


def test_rebalance_checkpoints_are_rate_limited() -> None:
    clock = Clock()
    shown = {"now": True}
    source = ImdsSource(
        ScriptedClient(aemm_rebalance(lambda: shown["now"])), rebalance_every=60.0, clock=clock
    )

    def flap(n: int) -> None:  # shown, gone, shown again ... one poll each, 10 s apart
        clock.t += 10.0
        shown["now"] = n % 2 == 0

    posted: list[Notice] = []
    times: list[float] = []

    def post(notice: Notice) -> None:
        posted.append(notice)
        times.append(clock.t)

    with capture_logs():
        source.run(post, Rounds(20, flap))
    # Reappearing every 20 s for 200 s: ten appearances, one checkpoint per 60 s at most.
    assert times == [0.0, 60.0, 120.0, 180.0]
    assert len({n.event_id for n in posted}) == 4, "each is a new event for the board"


@pytest.mark.parametrize(("sync_interval", "expected"), [(300, 60), (20, 20), (0, 60)])
def test_rebalance_every_is_the_sync_interval_or_a_minute(
    sync_interval: float, expected: float
) -> None:
    assert rebalance_every(sync_interval) == expected


# -- scheduled events ------------------------------------------------------------------


def events_script(*events: dict[str, Any]) -> Callable[[str], str | None]:
    import json

    body = json.dumps(list(events))
    return lambda path: body if path == SCHEDULED_PATH else None


def event(code: str, in_seconds: float, duration: float = 7200, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "Code": code,
        "EventId": f"instance-event-{code}",
        "NotBefore": (now + timedelta(seconds=in_seconds)).isoformat(),
        "NotAfter": (now + timedelta(seconds=in_seconds + duration)).isoformat(),
        "State": "active",
        **extra,
    }


def test_a_reboot_gets_a_second_checkpoint_shortly_before_it_starts() -> None:
    in_seconds = {"now": 3600.0}

    def script(path: str) -> str | None:
        return events_script(event("system-reboot", in_seconds["now"]))(path)

    def approach(n: int) -> None:
        if n == 5:
            in_seconds["now"] = 200.0  # inside the 300 s lead

    posted = run(ImdsSource(ScriptedClient(script), reboot_lead=300), rounds=10, each=approach)
    assert [(n.kind, n.event_id) for n in posted] == [
        (SCHEDULED, "instance-event-system-reboot"),
        (SCHEDULED, "instance-event-system-reboot:before-start"),
    ]
    board = NoticeBoard()
    assert all(board.accept(n) for n in posted), "the board acts on both"


def test_a_reboot_first_seen_inside_the_lead_gets_one_checkpoint() -> None:
    script = events_script(event("instance-reboot", 100))
    posted = run(ImdsSource(ScriptedClient(script), reboot_lead=300), rounds=5)
    assert [n.event_id for n in posted] == ["instance-event-instance-reboot"]


def test_an_overdue_active_stop_gets_the_spot_warning_not_an_instant_kill() -> None:
    script = events_script(event("instance-stop", -600))  # started ten minutes ago
    posted = run(ImdsSource(ScriptedClient(script)), rounds=5)
    assert [n.kind for n in posted] == [SCHEDULED, INTERRUPTION]
    left = posted[1].seconds_left()
    assert left is not None and 100 < left <= 120


def test_a_stale_active_stop_is_ignored_and_said_once() -> None:
    script = events_script(event("instance-stop", -7200, duration=3600))  # window over
    with capture_logs() as logs:
        posted: list[Notice] = []
        ImdsSource(ScriptedClient(script)).run(posted.append, Rounds(5))
    assert [n.kind for n in posted] == [SCHEDULED]
    assert [e["event"] for e in logs].count("imds.scheduled_stale") == 1


def test_every_event_code_is_handled_without_error() -> None:
    script = events_script(*(event(code, 60) for code in EVENT_CODES))
    posted = run(ImdsSource(ScriptedClient(script)), rounds=3)
    interruptions = {n.action for n in posted if n.kind == INTERRUPTION}
    assert interruptions == {"instance-stop", "instance-retirement"}
    assert {n.action for n in posted if n.kind == SCHEDULED} == set(EVENT_CODES)


# -- monotonic deadlines ----------------------------------------------------------------


def test_a_deadline_is_monotonic_once_it_arrived() -> None:
    notice = Notice(
        INTERRUPTION, "imds:spot", "terminate", datetime.now(UTC) + timedelta(seconds=90)
    )
    left = notice.seconds_left()
    assert left is not None and 89 < left <= 90
    # What a wall-clock step would do to a deadline recomputed from the wall clock:
    stepped = notice.seconds_left(datetime.now(UTC) + timedelta(hours=1))
    assert stepped is not None and stepped < 0
    assert notice.deadline_monotonic is not None
    assert notice.seconds_left(time.monotonic() + 30) == pytest.approx(left - 30, abs=0.5)


def test_sigterm_deadline_counts_from_arrival() -> None:
    arrived = time.monotonic() - 5.0  # handled five seconds after it arrived
    notice = sigterm_notice(30, received_monotonic=arrived)
    left = notice.seconds_left()
    assert left is not None and 24 < left <= 25
    assert (datetime.now(UTC) - notice.received).total_seconds() == pytest.approx(5, abs=0.5)


# -- settings and the factory -----------------------------------------------------------


def settings(**env: str) -> Any:
    return load_settings(argparse.Namespace(), ["true"], {"HOME": "/nonexistent", **env})


def test_endpoint_mode_and_sdk_switches_are_read_as_botocore_does() -> None:
    assert settings().imds_endpoint == "http://169.254.169.254"
    v6 = settings(AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE="IPv6")
    assert v6.imds_endpoint == "http://[fd00:ec2::254]" and not v6.imds_endpoint_set
    explicit = settings(
        AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE="ipv6",
        AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:1338",
    )
    assert explicit.imds_endpoint == "http://127.0.0.1:1338", "an explicit endpoint wins"
    with pytest.raises(ConfigError, match="AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"):
        settings(AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE="ipv5")
    assert settings(AWS_EC2_METADATA_DISABLED="True").imds_disabled
    assert not settings(AWS_EC2_METADATA_DISABLED="1").imds_disabled  # botocore: "true" only
    assert settings().imds_v1 == "allow"
    assert settings(AWS_EC2_METADATA_V1_DISABLED="true").imds_v1 == "forbid"
    assert settings(SPOT_AGENT_IMDS_V1="forbid").imds_v1 == "forbid"
    with pytest.raises(ConfigError, match=r"--imds-v1 \(SPOT_AGENT_IMDS_V1\)"):
        settings(SPOT_AGENT_IMDS_V1="maybe")


@pytest.mark.parametrize(
    ("env", "ec2", "why"),
    [
        ({"SPOT_AGENT_IMDS": "off"}, True, "--imds off"),
        ({"AWS_EC2_METADATA_DISABLED": "true"}, True, "AWS_EC2_METADATA_DISABLED=true"),
        ({}, False, "not on EC2 and AWS_EC2_METADATA_SERVICE_ENDPOINT unset"),
    ],
)
def test_no_source_and_one_line_saying_why(env: dict[str, str], ec2: bool, why: str) -> None:
    with capture_logs() as logs:
        source = make_imds_source(settings(**env), lambda _: None, looks_like_ec2=lambda: ec2)
    assert source is None
    assert [(e["event"], e["why"]) for e in logs] == [("imds.skipped", why)]


def test_the_factory_sends_no_request() -> None:
    s = settings(
        SPOT_AGENT_IMDS="on",
        AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:9",  # nothing listens there
        SPOT_AGENT_SYNC_INTERVAL="30s",
        SPOT_AGENT_IMDS_V1="forbid",
    )
    with capture_logs() as logs:
        source = make_imds_source(s, lambda _: None)
    assert isinstance(source, ImdsSource) and logs == []
    assert source.required and source.rebalance_every == 30
    assert not source.client.allow_v1
