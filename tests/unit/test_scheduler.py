"""The sync scheduler and the reserve arithmetic, driven with made-up clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.notices import INTERRUPTION, Notice
from agent.run.scheduler import (
    ASSUMED_UPLOAD_RATE,
    RATE_SAMPLE_BYTES,
    Interruption,
    SyncScheduler,
)
from checkpoint.engine.save.sync import SyncResult


def result(seconds: float = 1.0, uploaded: int = 0) -> SyncResult:
    return SyncResult("periodic", 1, 1, uploaded, uploaded, 1, uploaded, seconds)


def test_periodic_sync_is_due_an_interval_after_the_last_one_ended() -> None:
    sch = SyncScheduler(interval=60, min_reserve=10)
    sch.schedule(now=100)
    assert not sch.due(159.9) and sch.due(160)
    assert sch.wait_time(100) == 0.5  # the loop never waits longer than half a second
    assert sch.request("periodic") == "periodic"
    assert not sch.due(1e9)  # nothing else is due while one runs
    assert sch.finished(now=200, result=result()) is None
    assert not sch.due(259.9) and sch.due(260)


def test_zero_interval_means_no_periodic_syncs() -> None:
    sch = SyncScheduler(interval=0, min_reserve=10)
    sch.schedule(now=0)
    assert not sch.due(1e12)


def test_one_sync_at_a_time_and_one_request_kept_for_later() -> None:
    sch = SyncScheduler(interval=60, min_reserve=10)
    assert sch.request("requested") == "requested"
    assert sch.request("rebalance") is None
    assert sch.request("requested") is None  # kept once, the first reason wins
    assert sch.finished(now=1, result=None) == "rebalance"  # a failure still runs the next
    assert sch.finished(now=2, result=result()) is None


def test_after_close_nothing_starts_and_nothing_is_scheduled() -> None:
    sch = SyncScheduler(interval=60, min_reserve=10)
    assert sch.request("periodic") == "periodic"
    assert sch.request("requested") is None
    sch.close()
    assert sch.finished(now=5, result=result()) is None
    assert sch.request("requested") is None
    assert not sch.due(1e12)


def test_upload_rate_is_measured_only_on_sizeable_syncs() -> None:
    sch = SyncScheduler(interval=60, min_reserve=10)
    sch.request("periodic")
    sch.finished(now=1, result=result(seconds=0.5, uploaded=1000))
    assert sch.upload_rate is None and sch.last_sync_seconds == 0.5
    sch.request("periodic")
    sch.finished(now=2, result=result(seconds=2.0, uploaded=RATE_SAMPLE_BYTES * 2))
    assert sch.upload_rate == pytest.approx(RATE_SAMPLE_BYTES)


def test_reserve_is_at_least_the_minimum_and_at_most_80_percent_of_the_time_left() -> None:
    sch = SyncScheduler(interval=60, min_reserve=10)
    assert sch.reserve(budget=30, pending_bytes=0).reserve == 10
    assert sch.reserve(budget=5, pending_bytes=0).reserve == pytest.approx(4.0)
    assert sch.reserve(budget=-3, pending_bytes=0).reserve == 0.0


def test_reserve_grows_with_the_last_sync_and_the_pending_bytes() -> None:
    sch = SyncScheduler(interval=60, min_reserve=3)
    sch.request("periodic")
    sch.finished(now=1, result=result(seconds=4.0, uploaded=RATE_SAMPLE_BYTES * 4))
    assert sch.reserve(budget=100, pending_bytes=0).reserve == 8.0  # twice the last sync
    # 20 s of pending bytes at the measured rate, with half again for safety
    plan = sch.reserve(budget=100, pending_bytes=RATE_SAMPLE_BYTES * 20)
    assert plan.reserve == pytest.approx(30.0)
    assert plan.log_fields()["pending_bytes"] == RATE_SAMPLE_BYTES * 20


def test_with_no_measured_rate_the_reserve_sizes_the_pending_bytes_at_the_assumed_rate() -> None:
    """Issue 22, item 9: 256 MiB pending before the first sync got the minimum reserve."""
    sch = SyncScheduler(interval=60, min_reserve=3.333)
    plan = sch.reserve(budget=10, pending_bytes=256 << 20)
    assert plan.reserve == pytest.approx(8.0)  # 48 s wanted at 8 MiB/s, capped at 80% of 10 s
    assert plan.log_fields()["rate_source"] == "assumed"
    assert plan.log_fields()["upload_rate"] == ASSUMED_UPLOAD_RATE
    small = sch.reserve(budget=10, pending_bytes=8 << 20)
    assert small.reserve == pytest.approx(3.333)  # 1.5 s wanted: the minimum rules


def test_an_imds_deadline_is_converted_once_to_the_monotonic_clock() -> None:
    received = datetime(2026, 1, 1, tzinfo=UTC)
    notice = Notice(
        INTERRUPTION, "imds:spot", "terminate", received + timedelta(seconds=120), received
    )
    it = Interruption.arrived(notice, at=1000.0, grace_period=30)
    assert it.deadline == 1120.0
    assert it.seconds_left(now=1100.0) == 20.0  # whatever the wall clock says by then


def test_a_notice_without_deadline_gets_the_grace_period() -> None:
    notice = Notice(INTERRUPTION, "imds:scheduled", "stop", None)
    assert Interruption.arrived(notice, at=5.0, grace_period=30).deadline == 35.0
