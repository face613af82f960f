"""ImdsClient and ImdsSource against the emulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from structlog.testing import capture_logs

from agent.imds_mock import ImdsMock, add_arguments
from agent.notices import INTERRUPTION, REBALANCE, SCHEDULED, Notice
from agent.notices.client import ImdsClient
from agent.notices.failures import ImdsUnavailable
from agent.notices.parsers import parse_instance_action, parse_scheduled, parse_time
from agent.notices.protocol import INSTANCE_ACTION, REBALANCE_PATH, SCHEDULED_PATH, TERMINATION_TIME
from agent.notices.source import ImdsSource

ROOT = Path(__file__).resolve().parents[2]


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """The first truthy ``check()``; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, "condition not met in time"
            return value
        time.sleep(0.02)


@pytest.fixture
def mock() -> Iterator[ImdsMock]:
    with ImdsMock() as server:
        yield server


def fast_client(url: str, **kw: Any) -> ImdsClient:
    kw.setdefault("connect_timeout", 0.5)
    kw.setdefault("read_timeout", 0.5)
    kw.setdefault("backoff", 0.01)
    return ImdsClient(url, **kw)


@pytest.fixture
def client(mock: ImdsMock) -> Iterator[ImdsClient]:
    c = fast_client(mock.url)
    yield c
    c.close()


class RunningSource:
    """An ImdsSource in its own thread, posting into ``posted``; always stopped."""

    def __init__(self, source: ImdsSource) -> None:
        self.posted: list[Notice] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=source.run, args=(self.posted.append, self.stop), daemon=True
        )

    def kinds(self) -> list[tuple[str, str]]:
        return [(n.kind, n.source) for n in self.posted]


@pytest.fixture
def running(mock: ImdsMock) -> Iterator[Callable[..., RunningSource]]:
    started: list[RunningSource] = []

    def start(**kw: Any) -> RunningSource:
        client = fast_client(mock.url, retries=kw.pop("retries", 1))
        source = RunningSource(ImdsSource(client, interval=0.05, max_backoff=0.2, **kw))
        source.thread.start()
        started.append(source)
        return source

    yield start
    for source in started:
        source.stop.set()
        source.thread.join(timeout=5)
        assert not source.thread.is_alive()


# -- the emulator speaks IMDSv2 ----------------------------------------------------------


def test_notice_appears_after_notice_after() -> None:
    with ImdsMock(notice_after=0.3, notice_lead=120) as server:
        client = fast_client(server.url)
        assert client.get(INSTANCE_ACTION) is None
        assert client.get(TERMINATION_TIME) is None
        body = eventually(lambda: client.get(INSTANCE_ACTION))
        notice = parse_instance_action(body)
        assert (notice.kind, notice.action) == (INTERRUPTION, "terminate")
        left = notice.seconds_left()
        assert left is not None and 100 < left <= 121
        assert parse_time(client.get(TERMINATION_TIME)) == notice.deadline
        assert json.loads(body).keys() == {"action", "time"}


def test_tokens_are_required_and_validated(mock: ImdsMock) -> None:
    meta = mock.url + "/latest/meta-data/instance-id"
    assert requests.get(meta, timeout=2).status_code == 401
    token_url = mock.url + "/latest/api/token"
    for ttl in (None, "0", "21601", "soon"):
        headers = {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
        assert requests.put(token_url, headers=headers, timeout=2).status_code == 400
    assert requests.get(token_url, timeout=2).status_code == 405
    token = requests.put(
        token_url, headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, timeout=2
    )
    assert token.status_code == 200
    reply = requests.get(meta, headers={"X-aws-ec2-metadata-token": token.text}, timeout=2)
    assert (reply.status_code, reply.text) == (200, "i-0123456789abcdef0")
    assert reply.headers["Content-Type"] == "text/plain"
    forwarded = requests.put(
        token_url,
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.1"},
        timeout=2,
    )
    assert forwarded.status_code == 403


def test_v1_requests_when_tokens_are_optional() -> None:
    with ImdsMock(require_token=False) as server:
        meta = server.url + "/latest/meta-data/instance-id"
        assert requests.get(meta, timeout=2).status_code == 200
        bad = {"X-aws-ec2-metadata-token": "forged"}
        assert requests.get(meta, headers=bad, timeout=2).status_code == 401


def test_static_metadata(client: ImdsClient) -> None:
    assert client.get("instance-type") == "m5.large"
    assert client.get("placement/region") == "us-east-1"
    assert client.get("placement/availability-zone") == "us-east-1a"
    assert (client.get("ami-id") or "").startswith("ami-")
    document = json.loads(client.get("/latest/dynamic/instance-identity/document") or "")
    assert document["instanceId"] == client.get("instance-id")
    assert document["region"] == "us-east-1"
    assert client.get("no/such/path") is None
    assert client.probe() is None


def test_rebalance_and_scheduled_events() -> None:
    scheduled = [{"Code": "instance-retirement", "NotBefore": "21 Jan 2030 09:00:43 GMT"}]
    with ImdsMock(rebalance_after=0.0, scheduled=scheduled) as server:
        client = fast_client(server.url)
        assert json.loads(client.get(REBALANCE_PATH) or "")["noticeTime"].endswith("Z")
        server.add_scheduled_event("instance-stop", 300)
        server.add_scheduled_event("system-reboot", 300, state="canceled")
        notices = parse_scheduled(client.get(SCHEDULED_PATH) or "")
        assert [(n.kind, n.action) for n in notices] == [
            (SCHEDULED, "instance-retirement"),
            (SCHEDULED, "instance-stop"),
        ]
        left = notices[1].seconds_left()
        assert left is not None and 290 < left <= 301
        assert set(notices[1].detail) >= {"Code", "Description", "EventId", "NotBefore", "State"}
        server.clear()
        assert client.get(REBALANCE_PATH) is None
        assert client.get(SCHEDULED_PATH) == "[]"


def test_timeouts_and_refusals_explain_themselves(mock: ImdsMock) -> None:
    mock.delay(1.0)  # like a PUT reply lost to hop limit 1
    slow = fast_client(mock.url, read_timeout=0.2, retries=0)
    reason = slow.probe()
    assert reason is not None and "HttpPutResponseHopLimit" in reason
    mock.delay(0)
    assert slow.probe() is None

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    refused = fast_client(f"http://127.0.0.1:{closed_port}", retries=0)
    reason = refused.probe()
    assert reason is not None and "refused" in reason
    with pytest.raises(ImdsUnavailable):
        refused.get(INSTANCE_ACTION)


def test_client_survives_dropped_tokens_and_5xx(mock: ImdsMock, client: ImdsClient) -> None:
    assert client.get("instance-id")
    mock.drop_tokens()
    assert client.get("instance-id")  # 401, new token, retried
    mock.fail_next(2, status=503)
    assert client.get("instance-id")  # retries=2 outlasts two failures
    mock.fail_next(10, status=500)
    with pytest.raises(ImdsUnavailable):
        client.get("instance-id")


# -- the source, end to end --------------------------------------------------------------


def test_source_posts_an_interruption(
    mock: ImdsMock, running: Callable[..., RunningSource]
) -> None:
    source = running()
    mock.post_rebalance()
    eventually(lambda: source.posted)
    mock.post_interruption("stop", in_seconds=90)
    eventually(lambda: any(n.is_interruption for n in source.posted))
    spot = next(n for n in source.posted if n.is_interruption)
    assert (spot.source, spot.action) == ("imds:spot", "stop")
    assert source.kinds().count((REBALANCE, "imds:rebalance")) == 1


def test_notice_is_posted_after_a_fault_window(
    mock: ImdsMock, running: Callable[..., RunningSource]
) -> None:
    with capture_logs() as logs:
        source = running(retries=0)
        # Polling, not only holding a token: failures during the start-up identity reads
        # are logged as imds.unavailable instead (a loaded run once met that race).
        eventually(lambda: any(log["event"] == "imds.polling" for log in logs))
        mock.drop_tokens()
        mock.fail_next(8, status=500)
        eventually(lambda: any(log["event"] == "imds_poll_failed" for log in logs))
        mock.post_interruption("terminate", in_seconds=120)
        eventually(lambda: any(n.is_interruption for n in source.posted))
    assert mock.state()["fail_next"] == 0
    assert source.kinds() == [(INTERRUPTION, "imds:spot")]
    assert any(log["event"] == "imds_recovered" for log in logs)


def test_scheduled_stop_soon_becomes_an_interruption(
    mock: ImdsMock, running: Callable[..., RunningSource]
) -> None:
    mock.add_scheduled_event("instance-stop", 120)
    source = running(scheduled_window=600)
    eventually(lambda: (INTERRUPTION, "imds:scheduled") in source.kinds())
    assert (SCHEDULED, "imds:scheduled") in source.kinds()


# -- control API and command line --------------------------------------------------------


def test_control_api(mock: ImdsMock, client: ImdsClient) -> None:
    control = mock.url + "/spot-agent-mock/"
    reply = requests.post(control + "interrupt?in=60&action=stop", timeout=2)
    assert reply.status_code == 200
    assert reply.json()["instance_action"]["action"] == "stop"
    notice = parse_instance_action(client.get(INSTANCE_ACTION) or "")
    left = notice.seconds_left()
    assert notice.action == "stop" and left is not None and 50 < left <= 61

    assert requests.post(control + "rebalance", timeout=2).status_code == 200
    assert client.get(REBALANCE_PATH) is not None
    assert requests.post(control + "scheduled?code=instance-stop&in=60", timeout=2).ok
    assert len(json.loads(client.get(SCHEDULED_PATH) or "")) == 1
    assert requests.post(control + "clear", timeout=2).ok
    assert client.get(INSTANCE_ACTION) is None
    assert client.get(REBALANCE_PATH) is None

    assert requests.post(control + "drop-tokens", timeout=2).json()["live_tokens"] == 0
    assert requests.post(control + "fail?n=1&status=503", timeout=2).ok
    assert requests.get(control + "state", timeout=2).json()["fail_next"] == 1

    assert requests.post(control + "interrupt?action=explode", timeout=2).status_code == 400
    assert requests.post(control + "scheduled?code=nope", timeout=2).status_code == 400
    assert requests.post(control + "frobnicate", timeout=2).status_code == 404
    assert requests.get(control + "clear", timeout=2).status_code == 405


def test_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--scheduled", "instance-stop@30", "--scheduled", "system-reboot", "--no-token"]
    )
    assert args.port == 1338 and args.host == "127.0.0.1"
    assert args.scheduled == [("instance-stop", 30.0), ("system-reboot", 86400.0)]
    assert args.no_token
    with pytest.raises(SystemExit):
        parser.parse_args(["--scheduled", "instance-explode@30"])


def test_command_line_smoke() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.imds_mock", "--port", "0", "--notice-after", "0",
         "--action", "hibernate", "--scheduled", "instance-stop@600"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:" in line
        endpoint = line.rsplit("=", 1)[1].strip()
        client = ImdsClient.from_environ({"AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint})
        assert json.loads(client.get(INSTANCE_ACTION) or "")["action"] == "hibernate"
        assert len(parse_scheduled(client.get(SCHEDULED_PATH) or "")) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class AemmLikeMock(ImdsMock):
    """AEMM serves a new rebalance noticeTime on every request."""

    def metadata(self, path: str) -> str | None:
        body = super().metadata(path)
        if body is not None and path.endswith(REBALANCE_PATH):
            return json.dumps({"noticeTime": f"2026-11-23T12:00:{time.time() % 60:06.3f}Z"})
        return body


def test_an_aemm_rebalance_is_one_notice_however_often_it_is_polled() -> None:
    with AemmLikeMock(rebalance_after=0) as server:
        source = RunningSource(
            ImdsSource(fast_client(server.url), interval=0.05, rebalance_every=60.0)
        )
        with capture_logs():
            source.thread.start()
            try:
                time.sleep(1.5)  # some 25 polls, each with a different body
            finally:
                source.stop.set()
                source.thread.join(timeout=5)
    assert source.kinds() == [(REBALANCE, "imds:rebalance")]
