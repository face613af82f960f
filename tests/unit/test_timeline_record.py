"""The attempt record's writer and the timeline's arithmetic, with made-up records."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import structlog

from agent.logs import emf
from agent.timeline.model import Attempt, load_timeline
from agent.timeline.record import AttemptRecord
from agent.timeline.svg import svg
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import LocalStore


def test_a_store_that_fails_never_fails_the_writer_and_is_reported_once() -> None:
    calls: list[bytes] = []
    fail = threading.Event()
    fail.set()

    def put(body: bytes) -> None:
        calls.append(body)
        if fail.is_set():
            raise OSError("disk on fire")

    with structlog.testing.capture_logs() as logged:
        record = AttemptRecord(3, put, host="h")
        record.update(job_started="2026-01-01T00:00:00.000Z")
        assert not record.close(0.5)  # not written: said so, did not raise
        record.update(end="exited")
        assert not record.close(0.5)
        fail.clear()
        record.ended("exited", 0)
        assert record.close(5.0)
    warnings = [e for e in logged if e["event"] == "timeline.record_failed"]
    assert len(warnings) == 1 and warnings[0]["error"] == "disk on fire"
    last = json.loads(calls[-1])
    assert last["attempt"] == 3 and last["end"] == "exited" and last["exit_code"] == 0


def attempt(**record: Any) -> Attempt:
    base = {"started": "2026-01-01T00:00:00.000Z", "job_started": "2026-01-01T00:00:10.000Z"}
    return Attempt(1, {}, {**base, **record}, end=str(record.get("end", "interrupted")))


def test_work_lost_runs_from_the_last_committed_save_to_the_notice() -> None:
    notice = {"source": "sigterm", "received": "2026-01-01T00:01:00.000Z"}
    saved = {"sequence": 4, "saved_at": "2026-01-01T00:00:45.500Z"}
    assert attempt(notice=notice, last_commit=saved).work_lost() == 14.5
    # nothing committed by this attempt: everything since the job started is lost
    assert attempt(notice=notice).work_lost() == 50.0
    # the final checkpoint holds a save made after the notice: nothing is lost
    late = {**saved, "saved_at": "2026-01-01T00:01:02.000Z"}
    assert attempt(notice=notice, last_commit=late).work_lost() == 0.0
    # the job never started: nothing done, nothing lost
    assert Attempt(1, {}, {"notice": notice}, end="interrupted").work_lost() == 0.0
    # an attempt that ended by itself lost nothing
    assert attempt(end="exited", ended="2026-01-01T00:02:00.000Z").work_lost() is None


def test_the_parts_of_an_attempt_add_up() -> None:
    a = attempt(
        ended="2026-01-01T00:01:05.000Z",
        restore={"seconds": 8.0, "ended": "2026-01-01T00:00:10.000Z"},
        final_sync={"started": "2026-01-01T00:01:01.000Z", "seconds": 2.5},
    )
    f = a.figures()
    assert f == {
        "seconds": 65.0,
        "restore_seconds": 8.0,
        "job_seconds": 51.0,
        "final_sync_seconds": 2.5,
        "other_seconds": 3.5,
    }


def test_unreadable_and_newer_records_are_shown_not_fatal(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    job = JobStore(store, "j")
    job.claim_attempt({"host": "a"})
    job.claim_attempt({"host": "b"})
    store.put_object(job.record_key(1), b"{not json")
    store.put_object(job.record_key(2), json.dumps({"format": 99}).encode())
    doc = load_timeline(job).as_dict()
    one, two = doc["attempts"]
    assert "unreadable" in one and one["host"] == "a" and one["end"] == "cut_short"
    assert "newer" in two["unreadable"] and two["end"] == "running"
    assert svg(doc).startswith("<svg")  # and the picture still draws


def test_the_cost_of_an_interruption_is_an_emf_metric() -> None:
    event = {
        "event": "interruption.cost",
        "job_id": "j",
        "work_lost_seconds": 14.5,
        "notice_to_committed_seconds": 3.25,
    }
    doc = emf.embed(event, {"LogGroup": "/spot-agent/train"})
    (block,) = doc["_aws"]["CloudWatchMetrics"]
    assert block["Namespace"] == "SpotAgent" and block["Dimensions"] == [["LogGroup"]]
    assert {m["Name"]: m["Unit"] for m in block["Metrics"]} == {
        "WorkLostSeconds": "Seconds",
        "NoticeToCommittedSeconds": "Seconds",
    }
    assert (doc["WorkLostSeconds"], doc["NoticeToCommittedSeconds"]) == (14.5, 3.25)
    # a final checkpoint that failed has no notice-to-committed time: that metric is left out
    partial = emf.embed({**event, "notice_to_committed_seconds": None}, {"LogGroup": "g"})
    names = [m["Name"] for m in partial["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    assert names == ["WorkLostSeconds"]
