"""ImdsClient, the notice parsers and ImdsSource against canned HTTP (``responses``)."""

from __future__ import annotations

import errno
import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import responses
from structlog.testing import capture_logs

from agent.notices import INTERRUPTION, REBALANCE, SCHEDULED, Notice
from agent.notices.client import ImdsClient
from agent.notices.failures import ImdsUnavailable
from agent.notices.parsers import (
    parse_instance_action,
    parse_rebalance,
    parse_scheduled,
    parse_termination_time,
    parse_time,
    scheduled_is_interruption,
)
from agent.notices.protocol import (
    IDENTITY_PATHS,
    INSTANCE_ACTION,
    REBALANCE_PATH,
    SCHEDULED_PATH,
    TERMINATION_TIME,
    TOKEN_HEADER,
    TTL_HEADER,
)
from agent.notices.source import ImdsSource

EP = "http://imds.test"
TOKEN_URL = f"{EP}/latest/api/token"
META = f"{EP}/latest/meta-data/"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client(sleeps: list[float], clock: Callable[[], float] | None = None, **kw: Any) -> ImdsClient:
    return ImdsClient(EP, sleep=sleeps.append, clock=clock or Clock(), **kw)


def calls(http: responses.RequestsMock, method: str) -> list[Any]:
    return [c for c in http.calls if c.request.method == method]


def tokens_from(http: responses.RequestsMock) -> None:
    counter = itertools.count(1)
    http.add_callback(
        responses.PUT, TOKEN_URL, callback=lambda req: (200, {}, f"tok-{next(counter)}")
    )


# -- token lifecycle ---------------------------------------------------------------------


def test_one_token_serves_many_gets(http: responses.RequestsMock, sleeps: list[float]) -> None:
    tokens_from(http)
    http.get(META + "instance-id", body="i-1")
    c = client(sleeps)
    assert [c.get("instance-id") for _ in range(3)] == ["i-1"] * 3
    puts = calls(http, "PUT")
    assert len(puts) == 1
    assert puts[0].request.headers[TTL_HEADER] == "21600"
    assert all(g.request.headers[TOKEN_HEADER] == "tok-1" for g in calls(http, "GET"))


def test_token_refreshed_shortly_before_expiry(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens_from(http)
    http.get(META + "instance-id", body="i-1")
    clock = Clock()
    c = client(sleeps, clock, token_ttl=600)  # refresh margin: 60 s
    c.get("instance-id")
    clock.t = 530.0
    c.get("instance-id")
    assert len(calls(http, "PUT")) == 1
    clock.t = 545.0
    c.get("instance-id")
    assert len(calls(http, "PUT")) == 2
    assert calls(http, "GET")[-1].request.headers[TOKEN_HEADER] == "tok-2"


def test_shorter_ttl_granted_by_the_service_wins(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    http.put(TOKEN_URL, body="tok", headers={TTL_HEADER: "100"})
    http.get(META + "instance-id", body="i-1")
    clock = Clock()
    c = client(sleeps, clock)
    c.get("instance-id")
    clock.t = 95.0
    c.get("instance-id")
    assert len(calls(http, "PUT")) == 2


def test_401_gets_a_new_token_once_and_retries(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens_from(http)
    http.get(META + "instance-id", status=401)
    http.get(META + "instance-id", body="i-1")
    assert client(sleeps).get("instance-id") == "i-1"
    assert len(calls(http, "PUT")) == 2
    assert calls(http, "GET")[-1].request.headers[TOKEN_HEADER] == "tok-2"


def test_401_with_a_new_token_is_not_retried_forever(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens_from(http)
    http.get(META + "instance-id", status=401)
    with pytest.raises(ImdsUnavailable) as err:
        client(sleeps).get("instance-id")
    assert err.value.kind == "unauthorized"
    assert len(calls(http, "GET")) == 2


# -- statuses, retries, timeouts ---------------------------------------------------------


def test_404_means_none(http: responses.RequestsMock, sleeps: list[float]) -> None:
    tokens_from(http)
    http.get(META + INSTANCE_ACTION, status=404)
    assert client(sleeps).get(INSTANCE_ACTION) is None


def test_500_is_retried_with_backoff_then_unavailable(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens_from(http)
    http.get(META + "instance-id", status=500)
    with pytest.raises(ImdsUnavailable) as err:
        client(sleeps, retries=2).get("instance-id")
    assert err.value.kind == "http_5xx"
    assert "\n" not in err.value.reason
    assert len(calls(http, "GET")) == 3
    assert sleeps == [0.1, 0.2]


def test_500_then_200_recovers(http: responses.RequestsMock, sleeps: list[float]) -> None:
    tokens_from(http)
    http.get(META + "instance-id", status=503)
    http.get(META + "instance-id", body="i-1")
    assert client(sleeps).get("instance-id") == "i-1"


def test_token_put_500_is_retried(http: responses.RequestsMock, sleeps: list[float]) -> None:
    http.put(TOKEN_URL, status=500)
    http.put(TOKEN_URL, body="tok")
    http.get(META + "instance-id", body="i-1")
    assert client(sleeps).get("instance-id") == "i-1"


@pytest.mark.parametrize(
    ("exc", "kind", "gets"),
    [
        # A timeout already cost seconds: the next poll, a few seconds away, tries again.
        (requests.exceptions.ConnectTimeout(), "connect_timeout", 1),
        (requests.exceptions.ReadTimeout(), "read_timeout", 1),
        (requests.ConnectionError("reset by peer"), "connection_error", 2),
    ],
)
def test_network_failures_are_retried_only_when_quick(
    http: responses.RequestsMock, sleeps: list[float], exc: Exception, kind: str, gets: int
) -> None:
    tokens_from(http)
    http.get(META + "instance-id", body=exc)
    with pytest.raises(ImdsUnavailable) as err:
        client(sleeps, retries=1).get("instance-id")
    assert err.value.kind == kind
    assert len(calls(http, "GET")) == gets


def test_requests_get_the_configured_timeouts(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens_from(http)
    http.get(META + "instance-id", body="i-1")
    client(sleeps, connect_timeout=0.5, read_timeout=1.5).get("instance-id")
    assert all(c.request.req_kwargs["timeout"] == (0.5, 1.5) for c in http.calls)


# -- IMDSv1 fallback ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 405])
def test_v1_fallback_only_when_allowed(
    http: responses.RequestsMock, sleeps: list[float], status: int
) -> None:
    http.put(TOKEN_URL, status=status)
    http.get(META + "instance-id", body="i-1")
    with pytest.raises(ImdsUnavailable) as err:
        client(sleeps).get("instance-id")
    assert err.value.kind == "token_refused"
    assert not calls(http, "GET")

    c = client(sleeps, allow_v1=True)
    assert c.get("instance-id") == "i-1"
    assert c.get("instance-id") == "i-1"
    assert len(calls(http, "PUT")) == 2  # one per client: v1 is remembered
    assert all(TOKEN_HEADER not in g.request.headers for g in calls(http, "GET"))


def test_v1_mode_returns_to_v2_when_the_service_starts_requiring_tokens(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    http.put(TOKEN_URL, status=405)
    http.put(TOKEN_URL, body="tok")
    http.get(META + "instance-id", body="i-1")
    http.get(META + "instance-id", status=401)
    http.get(META + "instance-id", body="i-2")
    c = client(sleeps, allow_v1=True)
    assert c.get("instance-id") == "i-1"
    assert c.get("instance-id") == "i-2"
    assert calls(http, "GET")[-1].request.headers[TOKEN_HEADER] == "tok"


def test_token_put_400_is_not_a_v1_signal(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    http.put(TOKEN_URL, status=400)
    with pytest.raises(ImdsUnavailable):
        client(sleeps, allow_v1=True).get("instance-id")
    assert not calls(http, "GET")


# -- probe and construction --------------------------------------------------------------


def test_probe_reachable(http: responses.RequestsMock, sleeps: list[float]) -> None:
    tokens_from(http)
    http.get(META + "instance-id", status=404)  # odd, but the service answered
    assert client(sleeps).probe() is None


@pytest.mark.parametrize(
    ("put", "words"),
    [
        (requests.exceptions.ReadTimeout(), ["HttpPutResponseHopLimit", "2", "container"]),
        (requests.exceptions.ConnectTimeout(), ["not running on EC2"]),
        (
            requests.ConnectionError(ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
            ["refused", "AWS_EC2_METADATA_SERVICE_ENDPOINT"],
        ),
        (
            requests.ConnectionError(OSError(errno.ENETUNREACH, "Network is unreachable")),
            ["unreachable", "not running on EC2"],
        ),
        (403, ["HTTP 403", "IMDSv1"]),
    ],
)
def test_probe_explains_the_likely_cause(
    http: responses.RequestsMock, sleeps: list[float], put: Any, words: list[str]
) -> None:
    if isinstance(put, int):
        http.put(TOKEN_URL, status=put)
    else:
        http.put(TOKEN_URL, body=put)
    reason = client(sleeps).probe()
    assert reason is not None
    assert "\n" not in reason
    for word in words:
        assert word in reason
    assert len(calls(http, "PUT")) == 1, "probe answers at once, without retries"


def test_probe_reports_a_5xx_in_one_line(http: responses.RequestsMock, sleeps: list[float]) -> None:
    # No verdict hangs on it any more: the source keeps trying whatever the probe says.
    http.put(TOKEN_URL, status=503)
    assert client(sleeps).probe() == f"{EP} answered HTTP 503"


def test_from_environ() -> None:
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1338/"}
    assert ImdsClient.from_environ(env).endpoint == "http://127.0.0.1:1338"
    assert ImdsClient.from_environ({}).endpoint == "http://169.254.169.254"
    assert ImdsClient.from_environ(env, retries=0).retries == 0
    with pytest.raises(ValueError, match="AWS_EC2_METADATA_SERVICE_ENDPOINT"):
        ImdsClient.from_environ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "169.254.169.254"})
    with pytest.raises(ValueError):
        ImdsClient(token_ttl=0)


# -- parsers -----------------------------------------------------------------------------


def test_instance_action() -> None:
    body = '{"action": "stop", "time": "2026-11-23T12:02:00Z", "extra": 1}'
    notice = parse_instance_action(body, now=NOW)
    assert (notice.kind, notice.source, notice.action) == (INTERRUPTION, "imds:spot", "stop")
    assert notice.deadline == NOW + timedelta(minutes=2)


def test_instance_action_time_in_the_past_is_kept() -> None:
    notice = parse_instance_action('{"action":"terminate","time":"2020-01-01T00:00:00Z"}', NOW)
    assert notice.is_interruption
    left = notice.seconds_left(NOW)
    assert left is not None and left < 0


@pytest.mark.parametrize(
    "body", ['{"action": "terminate", "time": ', "", "[]", "null", '{"action": 3}', "<html>"]
)
def test_malformed_instance_action_is_still_an_interruption(body: str) -> None:
    with capture_logs() as logs:
        notice = parse_instance_action(body, now=NOW)
    assert notice.is_interruption
    assert notice.deadline == NOW + timedelta(seconds=120)
    assert notice.action == "terminate"
    assert any(log["log_level"] == "warning" for log in logs)


def test_termination_time() -> None:
    notice = parse_termination_time("2026-11-23T12:02:00Z\n", NOW)
    assert (notice.kind, notice.action) == (INTERRUPTION, "terminate")
    assert notice.deadline == NOW + timedelta(minutes=2)
    assert parse_termination_time("soon", NOW).deadline == NOW + timedelta(seconds=120)


def test_rebalance() -> None:
    notice = parse_rebalance('{"noticeTime": "2026-11-23T11:59:00Z"}', NOW)
    assert (notice.kind, notice.source, notice.action) == (REBALANCE, "imds:rebalance", "rebalance")
    assert notice.deadline is None
    with capture_logs():
        assert parse_rebalance("not json", NOW).kind == REBALANCE


def test_scheduled_events() -> None:
    body = """[
      {"Code": "instance-stop", "Description": "d", "EventId": "instance-event-1",
       "NotBefore": "23 Nov 2026 12:05:00 GMT", "NotAfter": "23 Nov 2026 14:05:00 GMT",
       "State": "active"},
      {"Code": "system-reboot", "NotBefore": "2026-11-30T00:00:00Z", "State": "active"},
      {"Code": "instance-retirement", "NotBefore": "1 Dec 2026 00:00:00 GMT", "State": "completed"},
      {"Code": "instance-stop", "NotBefore": "1 Dec 2026 00:00:00 GMT", "State": "canceled"},
      "junk", {"Description": "no code"}
    ]"""
    with capture_logs():
        notices = parse_scheduled(body, NOW)
    assert [(n.kind, n.source, n.action) for n in notices] == [
        (SCHEDULED, "imds:scheduled", "instance-stop"),
        (SCHEDULED, "imds:scheduled", "system-reboot"),
    ]
    assert notices[0].deadline == NOW + timedelta(minutes=5)
    assert notices[0].detail["EventId"] == "instance-event-1"
    assert notices[1].deadline == datetime(2026, 11, 30, tzinfo=UTC)


@pytest.mark.parametrize("body", ["[]", "{}", "nope", "[1, 2]"])
def test_malformed_or_empty_scheduled_yields_nothing(body: str) -> None:
    with capture_logs():
        assert parse_scheduled(body, NOW) == []


def test_scheduled_is_interruption() -> None:
    def event(code: str, minutes: float | None) -> Notice:
        deadline = None if minutes is None else NOW + timedelta(minutes=minutes)
        return Notice(SCHEDULED, "imds:scheduled", code, deadline)

    assert scheduled_is_interruption(event("instance-stop", 5), 600, NOW)
    assert scheduled_is_interruption(event("instance-retirement", -5), 600, NOW)
    assert not scheduled_is_interruption(event("instance-stop", 60), 600, NOW)
    assert not scheduled_is_interruption(event("system-reboot", 1), 600, NOW)
    assert not scheduled_is_interruption(event("instance-stop", None), 600, NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("21 Jan 2019 09:00:43 GMT", datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)),
        ("2019-01-21T09:00:43Z", datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)),
        ("2019-01-21T10:00:43+01:00", datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)),
        ("2019-01-21T09:00:43", datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)),
        ("31 Feb 2019 09:00:43 GMT", None),
        ("21 Foo 2019 09:00:43 GMT", None),
        ("", None),
        (None, None),
        (1700000000, None),
    ],
)
def test_parse_time(text: object, expected: datetime | None) -> None:
    assert parse_time(text) == expected


# -- ImdsSource --------------------------------------------------------------------------


class ScriptedClient(ImdsClient):
    """Answers from ``script(path)``: a body, None (404), or an exception to raise."""

    def __init__(self, script: Callable[[str], str | Exception | None]) -> None:
        super().__init__(EP)
        self.script = script
        self.gets = 0

    def get(self, path: str) -> str | None:
        self.gets += 1
        answer = self.script(path)
        if isinstance(answer, Exception):
            raise answer
        return answer


class StopAfter(threading.Event):
    """A stop event that records each wait and is set after ``rounds`` of them."""

    def __init__(self, rounds: int, on_wait: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.rounds = rounds
        self.on_wait = on_wait
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if self.on_wait:
            self.on_wait(len(self.waits))
        if len(self.waits) >= self.rounds:
            self.set()
        return self.is_set()


def run_source(source: ImdsSource, rounds: int, **kw: Any) -> list[Notice]:
    posted: list[Notice] = []
    source.run(posted.append, StopAfter(rounds, **kw))
    return posted


ACTION = '{"action": "terminate", "time": "2026-11-23T12:02:00Z"}'


def test_source_falls_back_to_termination_time() -> None:
    def script(path: str) -> str | None:
        return {TERMINATION_TIME: "2026-11-23T12:02:00Z", SCHEDULED_PATH: "[]"}.get(path)

    notices = ImdsSource(ScriptedClient(script)).poll_once()
    assert [(n.kind, n.action) for n in notices] == [(INTERRUPTION, "terminate")]


def test_source_posts_a_scheduled_stop_inside_the_window_as_an_interruption() -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    body = f'[{{"Code": "instance-stop", "NotBefore": "{soon}", "State": "active"}}]'
    client = ScriptedClient(lambda p: body if p == SCHEDULED_PATH else None)
    assert [n.kind for n in ImdsSource(client, scheduled_window=600).poll_once()] == [
        SCHEDULED,
        INTERRUPTION,
    ]
    assert [n.kind for n in ImdsSource(client, scheduled_window=60).poll_once()] == [SCHEDULED]


def test_source_posts_each_notice_once() -> None:
    client = ScriptedClient(lambda p: {INSTANCE_ACTION: ACTION, SCHEDULED_PATH: "[]"}.get(p))
    posted = run_source(ImdsSource(client), rounds=10)
    assert [(n.kind, n.source) for n in posted] == [(INTERRUPTION, "imds:spot")]


def test_malformed_notice_is_posted_once_although_its_deadline_moves() -> None:
    client = ScriptedClient(lambda p: "{garbage" if p == INSTANCE_ACTION else None)
    with capture_logs():
        posted = run_source(ImdsSource(client), rounds=10)
    assert len(posted) == 1 and posted[0].is_interruption


def test_run_never_raises_whatever_the_client_raises() -> None:
    errors = itertools.cycle(
        [
            ImdsUnavailable("down", "http_5xx"),
            requests.ConnectionError("boom"),
            ValueError("bad"),
            KeyError("k"),
            RuntimeError("x"),
            TypeError("t"),
        ]
    )
    client = ScriptedClient(lambda p: next(errors))
    with capture_logs():
        posted = run_source(ImdsSource(client), rounds=24)
    assert posted == []
    assert client.gets == 24


def test_notice_after_recovery_is_posted_and_recovery_logged() -> None:
    polls = itertools.count()

    def script(path: str) -> str | Exception | None:
        if next(polls) < 5:
            return ImdsUnavailable("down", "connect_timeout")
        return ACTION if path == INSTANCE_ACTION else None

    client = ScriptedClient(script)
    with capture_logs() as logs:
        posted = run_source(ImdsSource(client), rounds=10)
    assert [n.source for n in posted] == ["imds:spot"]
    events = [log["event"] for log in logs]
    # Unavailable at start is a state, said once; polling starts when the service answers.
    assert events.count("imds.unavailable") == 1
    assert events.count("imds.polling") == 1
    assert events.index("imds.unavailable") < events.index("imds.polling")


def test_failing_post_is_retried_without_raising() -> None:
    client = ScriptedClient(lambda p: ACTION if p == INSTANCE_ACTION else None)
    posted: list[Notice] = []
    attempts = itertools.count()

    def post(notice: Notice) -> None:
        if next(attempts) == 0:
            raise RuntimeError("queue full")
        posted.append(notice)

    with capture_logs():
        ImdsSource(client).run(post, StopAfter(5))
    assert len(posted) == 1


@pytest.mark.parametrize(
    ("interval", "waits"),
    [
        # Never more than a few seconds between polls while the service errs: the whole
        # spot warning is two minutes.
        (2.0, [3.0] * 6 + [2.0, 2.0]),
        (0.5, [1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 0.5, 0.5]),
        (10.0, [10.0] * 6 + [10.0, 10.0]),  # a longer interval is never shortened
    ],
)
def test_backoff_is_capped_at_a_few_seconds_then_returns_to_the_interval(
    interval: float, waits: list[float]
) -> None:
    polls = itertools.count()

    def script(path: str) -> str | Exception | None:
        return ImdsUnavailable("down", "http_5xx") if next(polls) < 6 else None

    stop = StopAfter(8)
    source = ImdsSource(ScriptedClient(script), interval=interval, clock=Clock())
    with capture_logs():
        source.run(lambda n: None, stop)
    assert stop.waits == waits


def test_errors_are_logged_once_per_kind_per_period() -> None:
    clock = Clock()
    kinds = itertools.cycle(["connect_timeout", "http_5xx"])
    # the identity answers; only the notice polls fail, alternating kinds
    identity = set(IDENTITY_PATHS.values())
    client = ScriptedClient(
        lambda p: "i-1" if p in identity else ImdsUnavailable("down", next(kinds))
    )
    source = ImdsSource(client, log_every=300.0, clock=clock)

    def later(waits: int) -> None:
        if waits == 10:
            clock.t = 301.0

    with capture_logs() as logs:
        source.run(lambda n: None, StopAfter(20, later))
    failed = [log for log in logs if log["event"] == "imds_poll_failed"]
    assert [log["kind"] for log in failed] == ["connect_timeout", "http_5xx"] * 2
    assert [log["suppressed"] for log in failed] == [0, 0, 4, 4]
    assert all(log["log_level"] == "warning" for log in failed)


def test_run_stops_promptly_while_waiting() -> None:
    client = ScriptedClient(lambda p: ImdsUnavailable("down", "connect_timeout"))
    stop = threading.Event()
    with capture_logs():
        thread = threading.Thread(
            target=ImdsSource(client, interval=10.0).run, args=(lambda n: None, stop)
        )
        thread.start()
        for _ in range(200):
            if client.gets:
                break
            stop.wait(0.01)
        stop.set()
        thread.join(timeout=2)
    assert not thread.is_alive()


@pytest.mark.parametrize("failing", [REBALANCE_PATH, SCHEDULED_PATH])
def test_a_spot_notice_is_posted_even_when_a_later_path_fails(failing: str) -> None:
    def script(path: str) -> str | Exception | None:
        if path == INSTANCE_ACTION:
            return ACTION
        if path == failing:
            return ImdsUnavailable("403 from a metadata filter", "http_error")
        return None

    with capture_logs():
        posted = run_source(ImdsSource(ScriptedClient(script)), rounds=3)
    assert [n.source for n in posted] == ["imds:spot"]


# -- throttling and the token PUT lost to a hop limit of 1 ---------------------------------


def test_429_is_retried_within_the_poll_with_jitter(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens_from(http)
    http.get(META + INSTANCE_ACTION, status=429)
    http.get(META + INSTANCE_ACTION, status=429)
    http.get(META + INSTANCE_ACTION, body=ACTION)
    jitters = iter([0.0, 1.0])
    c = ImdsClient(EP, sleep=sleeps.append, clock=Clock(), jitter=lambda: next(jitters))
    assert c.get(INSTANCE_ACTION) == ACTION
    assert sleeps == pytest.approx([0.05, 0.3])  # 0.1 x 0.5 .. 1.5, then 0.2 x 0.5 .. 1.5


def test_429_past_the_retries_is_a_throttled_failure(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    tokens_from(http)
    http.get(META + "instance-id", status=429)
    with pytest.raises(ImdsUnavailable) as err:
        client(sleeps, retries=1).get("instance-id")
    assert err.value.kind == "throttled" and err.value.retryable


def test_token_timeout_falls_back_to_v1_logs_the_fix_once_and_retries_v2_later(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    http.put(TOKEN_URL, body=requests.exceptions.ReadTimeout())
    http.get(META + "instance-id", body="i-1")
    clock = Clock()
    c = client(sleeps, clock, allow_v1=True, v2_retry_every=300.0)
    with capture_logs() as logs:
        assert [c.get("instance-id") for _ in range(3)] == ["i-1"] * 3
        assert len(calls(http, "PUT")) == 1, "no PUT (and no timeout) on every request"
        assert all(TOKEN_HEADER not in g.request.headers for g in calls(http, "GET"))
        clock.t = 301.0
        c.get("instance-id")
        assert len(calls(http, "PUT")) == 2, "IMDSv2 is tried again now and then"
        http.replace(responses.PUT, TOKEN_URL, body="tok")
        clock.t = 602.0
        c.get("instance-id")
    assert calls(http, "GET")[-1].request.headers[TOKEN_HEADER] == "tok"
    fallbacks = [log for log in logs if log["event"] == "imds.v1_fallback"]
    assert len(fallbacks) == 1
    assert "--http-put-response-hop-limit 2" in fallbacks[0]["reason"]
    assert any(log["event"] == "imds.v2_restored" for log in logs)


def test_token_timeout_with_v1_forbidden_explains_the_hop_limit(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    http.put(TOKEN_URL, body=requests.exceptions.ReadTimeout())
    with pytest.raises(ImdsUnavailable) as err:
        client(sleeps, allow_v1=False).get("instance-id")
    assert err.value.kind == "token_timeout"
    assert "HttpPutResponseHopLimit" in err.value.reason
    assert not calls(http, "GET")


def test_v1_refused_too_after_a_token_timeout_says_so(
    http: responses.RequestsMock, sleeps: list[float]
) -> None:
    """HttpTokens required and hop limit 1: nothing works; the error names the hop limit."""
    http.put(TOKEN_URL, body=requests.exceptions.ReadTimeout())
    http.get(META + "instance-id", status=401)
    with capture_logs(), pytest.raises(ImdsUnavailable) as err:
        client(sleeps, allow_v1=True).get("instance-id")
    assert err.value.kind == "token_timeout"
    assert "HttpPutResponseHopLimit" in err.value.reason
