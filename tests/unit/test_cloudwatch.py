"""The CloudWatch wrapper without a server: limits, overflow accounting, EMF documents."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent import logs
from agent.logs import emf
from agent.logs.cloudwatch import MAX_EVENT_BYTES, CloudWatchLogs, ShipLimits, fit


class _Exceptions:
    class ResourceNotFoundException(Exception):
        pass

    class ResourceAlreadyExistsException(Exception):
        pass


class FakeLogs:
    """A client whose PutLogEvents waits until released (a slow endpoint)."""

    exceptions = _Exceptions

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[list[dict[str, Any]]] = []

    def put_log_events(self, **kw: Any) -> dict[str, Any]:
        self.release.wait(30)
        self.batches.append(kw["logEvents"])
        return {}


@pytest.fixture
def stdout() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure(out, json=True)
    try:
        yield out
    finally:
        logs.configure(sys.stdout)


def events(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_full_queue_drops_counts_and_reports(stdout: io.StringIO) -> None:
    client = FakeLogs()
    cw = CloudWatchLogs("g", "s", client, ShipLimits(queue_events=50))
    for i in range(200):
        cw.offer(json.dumps({"event": "x", "i": i}))
    assert cw.dropped == 150 and cw.offered == 50
    reported = [e for e in events(stdout) if e["event"] == "logs.dropped"]
    assert len(reported) == 1  # once a minute, not once an event
    cw.close(0.3)  # the endpoint never answers: bounded, and the loss is reported
    lost = [e for e in events(stdout) if e["event"] == "logs.lost"][-1]
    assert lost["lost"] == 200 and lost["dropped_queue_full"] == 150
    assert lost["unsent_at_exit"] == 50
    client.release.set()


def test_delivered_in_order_and_flushed_at_close(stdout: io.StringIO) -> None:
    client = FakeLogs()
    client.release.set()
    cw = CloudWatchLogs("g", "s", client)
    for i in range(25_000):
        cw.offer(json.dumps({"i": i}))
    cw.close(10)
    sent = [json.loads(m["message"])["i"] for b in client.batches for m in b]
    assert sent == list(range(25_000))
    assert all(len(b) <= 10_000 for b in client.batches)
    assert all(sum(len(m["message"]) + 26 for m in b) <= 1024 * 1024 for b in client.batches)
    stamps = [m["timestamp"] for b in client.batches for m in b]
    assert stamps == sorted(stamps)
    assert events(stdout)[-1]["event"] == "logs.shipped"


def test_an_oversized_event_is_replaced_visibly() -> None:
    big = json.dumps(
        {"timestamp": "t", "level": "info", "event": "child.output", "line": "é" * 300_000}
    )
    small = fit(big)
    doc = json.loads(small)
    assert len(small.encode()) <= MAX_EVENT_BYTES
    assert doc["event"] == "child.output" and doc["truncated"] is True
    assert doc["original_bytes"] == len(big.encode()) and doc["head"]
    assert fit("short") == "short"


def test_emf_document_shape() -> None:
    event = {
        "timestamp": "2024-01-01T00:00:00Z",
        "event": "sync.committed",
        "job_id": "j1",
        "seconds": 1.5,
        "bytes": 1000,
        "bytes_uploaded": 10,
    }
    doc = emf.embed(event, {"LogGroup": "/jobs"})
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int)
    [directive] = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == "SpotAgent"
    assert directive["Dimensions"] == [["LogGroup"]]
    names = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert names == {
        "CheckpointSeconds": "Seconds",
        "CheckpointBytes": "Bytes",
        "CheckpointBytesUploaded": "Bytes",
    }
    # every metric and dimension is a member of the root, as the specification requires
    assert doc["CheckpointSeconds"] == 1.5 and doc["LogGroup"] == "/jobs"
    assert doc["JobId"] == "j1" and "_aws" not in event

    notice = emf.embed({"event": "notice.interruption", "seconds_left": None}, {"LogGroup": "g"})
    assert [m["Name"] for m in notice["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == [
        "Interruptions"
    ]
    assert notice["Interruptions"] == 1
    assert emf.embed({"event": "child.output"}, {"LogGroup": "g"}) == {"event": "child.output"}


def test_a_batch_never_spans_more_than_24_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.logs import batches

    clock = iter([1_000.0, 1_000.0 + 24 * 3600, 1_000.0 + 24 * 3600 + 1])
    monkeypatch.setattr(batches.time, "time", lambda: next(clock))
    queue = batches.EventQueue(100, 1 << 20)
    for text in ("a", "b", "c"):
        queue.put_many([(text, 1)])
    queue.close()
    first, second = queue.next_batch(0), queue.next_batch(0)
    assert [m["message"] for m in first or []] == ["a"]
    assert [m["message"] for m in second or []] == ["b", "c"]
    assert queue.next_batch(0) is None


def test_a_clock_that_steps_back_keeps_the_events_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.logs import batches

    clock = iter([2_000.0, 1_000.0])
    monkeypatch.setattr(batches.time, "time", lambda: next(clock))
    queue = batches.EventQueue(100, 1 << 20)
    queue.put_many([("late", 4)])
    queue.put_many([("stepped back", 12)])
    queue.close()
    stamps = [m["timestamp"] for m in queue.next_batch(0) or []]
    assert stamps == [2_000_000, 2_000_000]


def test_a_hung_endpoint_stops_the_making_of_events_and_the_flush_is_short(
    stdout: io.StringIO,
) -> None:
    client = FakeLogs()  # never answers until released
    cw = CloudWatchLogs("g", "s", client, ShipLimits(stall_seconds=0.2, send_interval=0.01))
    assert cw.accepting()
    cw.offer(json.dumps({"event": "first"}))
    deadline = time.monotonic() + 30
    while cw.accepting() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not cw.accepting()  # a send hung: lines are only counted from now on
    cw.offer(json.dumps({"event": "agent.exit"}))  # the agent's own few events still queue
    assert cw.offered == 2
    started = time.monotonic()
    cw.close(30)  # the endpoint is known not to answer: no use waiting 30 s
    assert time.monotonic() - started < 10
    lost = [e for e in events(stdout) if e["event"] == "logs.lost"][-1]
    assert lost["unsent_at_exit"] == 2 and lost["seconds"] < 10
    client.release.set()


def test_an_unproven_endpoint_gets_a_small_queue_a_working_one_the_whole(
    stdout: io.StringIO,
) -> None:
    client = FakeLogs()
    cw = CloudWatchLogs("g", "s", client, ShipLimits(unproven_events=5))
    cw.offer_many([json.dumps({"i": i}) for i in range(5)])
    assert not cw.accepting()
    client.release.set()
    deadline = time.monotonic() + 30
    while not cw.sent and time.monotonic() < deadline:  # the first batch goes after 5 s
        time.sleep(0.05)
    cw.offer_many([json.dumps({"i": i}) for i in range(5, 20)])
    assert cw.accepting() and cw.offered == 20
    cw.close(10)


def test_a_failed_send_is_counted_and_backs_off(stdout: io.StringIO) -> None:
    class Refusing(FakeLogs):
        def put_log_events(self, **kw: Any) -> dict[str, Any]:
            raise RuntimeError("AccessDeniedException: not allowed")

    cw = CloudWatchLogs("g", "s", Refusing())
    cw.offer_many([json.dumps({"i": i}) for i in range(3)])
    cw.close(10)
    assert cw.failed == 3 and not cw.accepting()
    lost = [e for e in events(stdout) if e["event"] == "logs.lost"][-1]
    assert lost["failed_to_send"] == 3 and "AccessDenied" in lost["last_error"]


def test_a_quiet_jobs_events_go_out_after_the_send_interval_not_at_exit(
    stdout: io.StringIO,
) -> None:
    client = FakeLogs()
    client.release.set()
    cw = CloudWatchLogs("g", "s", client, ShipLimits(send_interval=0.05))
    cw.offer(json.dumps({"event": "sync.committed"}))
    deadline = time.monotonic() + 30
    while not client.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(b) for b in client.batches] == [1]  # sent while the job runs
    cw.close(10)
