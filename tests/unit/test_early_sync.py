"""The notice-aware cadence: when the pending bytes call for an early sync, and how often
they are measured (pure arithmetic on made-up clocks and sizes); and its setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import build_parser
from agent.config import ConfigError, Settings, load_settings
from agent.run.scheduler import (
    ASSUMED_UPLOAD_RATE,
    EARLY,
    MEASURE_FLOOR,
    RATE_SAMPLE_BYTES,
    WALK_SHARE,
    SyncScheduler,
)
from checkpoint.engine.save.sync import SyncResult

MiB = 1 << 20


def scheduler(max_pending_upload: float = 60.0, interval: float = 300.0) -> SyncScheduler:
    sch = SyncScheduler(interval=interval, min_reserve=10, max_pending_upload=max_pending_upload)
    sch.schedule(now=0.0)  # the job started
    return sch


def measure_rate(sch: SyncScheduler, rate: float, now: float = 1.0) -> None:
    """One sizeable sync that uploaded at ``rate`` bytes/s."""
    assert sch.request("periodic") == "periodic"
    uploaded = RATE_SAMPLE_BYTES * 4
    done = SyncResult("periodic", 1, 1, uploaded, uploaded, 1, uploaded, uploaded / rate)
    sch.finished(now, done)
    assert sch.upload_rate == pytest.approx(rate)


def test_an_early_sync_is_due_when_the_pending_bytes_take_longer_than_the_threshold() -> None:
    sch = scheduler(max_pending_upload=60)
    measure_rate(sch, rate=10 * MiB, now=10.0)
    assert sch.early_sync(599 * MiB, now=20.0) is None  # 59.9 s: still fits
    assert sch.early_sync(600 * MiB, now=20.0) is None  # exactly the threshold fits
    plan = sch.early_sync(601 * MiB, now=20.0)
    assert plan is not None
    assert plan.rate_source == "measured"
    assert plan.estimate == pytest.approx(60.1)
    assert plan.threshold == 60
    assert plan.periodic_due_in == pytest.approx(290.0)  # the periodic sync counts from 10 s
    fields = plan.log_fields()
    assert fields["pending_bytes"] == 601 * MiB and fields["upload_rate"] == 10 * MiB
    assert fields["estimate_seconds"] == 60.1 and fields["threshold_seconds"] == 60


def test_a_faster_upload_allows_more_pending_bytes() -> None:
    slow, fast = scheduler(), scheduler()
    measure_rate(slow, rate=1 * MiB)
    measure_rate(fast, rate=100 * MiB)
    assert slow.early_sync(100 * MiB, now=5) is not None  # 100 s at 1 MiB/s
    assert fast.early_sync(100 * MiB, now=5) is None  # 1 s at 100 MiB/s


def test_without_a_measured_rate_a_slow_one_is_assumed() -> None:
    sch = scheduler(max_pending_upload=60)
    limit = int(60 * ASSUMED_UPLOAD_RATE)
    assert sch.early_sync(limit, now=5) is None
    plan = sch.early_sync(limit + MiB, now=5)
    assert plan is not None and plan.rate_source == "assumed"
    assert plan.upload_rate == ASSUMED_UPLOAD_RATE


def test_zero_turns_early_syncs_off_and_no_walk_is_ever_due() -> None:
    sch = scheduler(max_pending_upload=0)
    assert sch.early_sync(1 << 50, now=5) is None
    assert not sch.measure_due(1e12)


def test_no_early_sync_while_a_sync_runs_or_while_closing() -> None:
    sch = scheduler()
    assert sch.request("requested") == "requested"
    assert sch.early_sync(1 << 50, now=5) is None
    assert not sch.measure_due(1e12)  # that sync commits what a walk would count
    sch.finished(now=6, result=None)
    assert sch.early_sync(1 << 50, now=7) is not None
    sch.close()
    assert sch.early_sync(1 << 50, now=8) is None
    assert not sch.measure_due(1e12)


def test_without_periodic_syncs_the_early_sync_still_protects_the_notice() -> None:
    sch = scheduler(interval=0)
    assert sch.measure_due(MEASURE_FLOOR)
    plan = sch.early_sync(1 << 40, now=5)
    assert plan is not None and plan.periodic_due_in is None


def test_an_early_sync_queues_requests_and_resets_the_periodic_timer_like_any_sync() -> None:
    sch = scheduler(interval=300)
    plan = sch.measured(
        now=100, token=sch.measuring_started(), pending_bytes=1 << 40, walk_seconds=0.01
    )
    assert plan is not None
    assert sch.request(EARLY) == EARLY
    assert not sch.due(1e9)  # no periodic sync while the early one runs
    assert sch.request("requested") is None  # the job's request waits for it, as for any
    assert sch.finished(now=120, result=None) == "requested"
    sch.finished(now=130, result=None)
    assert not sch.due(429.9) and sch.due(430)


def test_walks_are_spaced_by_the_floor_and_by_their_own_cost() -> None:
    sch = scheduler()
    assert not sch.measure_due(MEASURE_FLOOR - 0.1) and sch.measure_due(MEASURE_FLOOR)
    token = sch.measuring_started()
    assert not sch.measure_due(1e12)  # one walk at a time
    sch.measured(now=10, token=token, pending_bytes=0, walk_seconds=0.001)
    assert not sch.measure_due(10 + MEASURE_FLOOR - 0.1) and sch.measure_due(10 + MEASURE_FLOOR)
    # a walk of 2 s: the next one 2 / WALK_SHARE = 40 s later (walks take 5% of the time)
    sch.measured(now=20, token=sch.measuring_started(), pending_bytes=0, walk_seconds=2.0)
    assert not sch.measure_due(59.9) and sch.measure_due(60)


def test_a_walk_during_which_a_sync_started_says_nothing() -> None:
    sch = scheduler()
    token = sch.measuring_started()
    assert sch.request("requested") == "requested"  # the job asked while the walk ran
    sch.finished(now=5, result=None)
    assert sch.measured(now=6, token=token, pending_bytes=1 << 40, walk_seconds=0.1) is None
    assert (
        sch.measured(now=7, token=sch.measuring_started(), pending_bytes=1 << 40, walk_seconds=0.1)
        is not None
    )


def test_a_failed_walk_starts_nothing_and_the_next_one_comes_later() -> None:
    sch = scheduler()
    assert (
        sch.measured(now=5, token=sch.measuring_started(), pending_bytes=None, walk_seconds=0.5)
        is None
    )
    assert not sch.measuring and sch.measure_due(5 + max(MEASURE_FLOOR, 0.5 / WALK_SHARE))


def test_the_reserve_is_unchanged_by_the_cadence() -> None:
    sch = scheduler()
    measure_rate(sch, rate=RATE_SAMPLE_BYTES)
    assert sch.reserve(budget=100, pending_bytes=RATE_SAMPLE_BYTES * 20).reserve == 30.0


def test_the_loop_wakes_for_a_walk_but_not_while_one_cannot_start() -> None:
    sch = scheduler(interval=300)
    assert sch.wait_time(MEASURE_FLOOR - 0.1) == pytest.approx(0.1)
    sch.measuring_started()
    assert sch.wait_time(MEASURE_FLOOR + 1) == 0.5  # a walk runs: no busy loop on it
    off = scheduler(max_pending_upload=0, interval=300)
    assert off.wait_time(MEASURE_FLOOR + 1) == 0.5


def early_sync_that_uploaded(sch: SyncScheduler, now: float, pending: int, uploaded: int) -> None:
    plan = sch.measured(now, sch.measuring_started(), pending, walk_seconds=0.01)
    assert plan is not None and sch.request(EARLY) == EARLY
    done = SyncResult(EARLY, 1, 1, pending, uploaded, 1, pending, 40.0)
    sch.finished(now + 40, done)


def test_an_early_sync_that_found_little_to_send_holds_the_next_one_back() -> None:
    # a 20 GiB file rewritten in place: the walk counts 20 GiB, the sync sends 100 MiB
    sch = scheduler(max_pending_upload=60)
    measure_rate(sch, rate=100 * MiB)
    early_sync_that_uploaded(sch, now=100, pending=20 << 30, uploaded=100 * MiB)
    assert sch.hold_early_until == 140 + 60  # the longer of the sync and the threshold
    assert sch.early_sync(20 << 30, now=199) is None
    assert sch.early_sync(20 << 30, now=200) is not None


def test_an_early_sync_that_sent_what_was_counted_holds_nothing_back() -> None:
    sch = scheduler(max_pending_upload=60)
    early_sync_that_uploaded(sch, now=100, pending=1 << 30, uploaded=(1 << 30) // 2)
    assert sch.hold_early_until == 0
    assert sch.early_sync(1 << 30, now=141) is not None


# -- the setting ------------------------------------------------------------------------


def settings(tmp_path: Path, *args: str, **env: str) -> Settings:
    parsed = build_parser().parse_args(["run", *args])
    return load_settings(parsed, ["job"], {"XDG_STATE_HOME": str(tmp_path), **env})


def test_the_default_is_half_a_spot_notice(tmp_path: Path) -> None:
    assert settings(tmp_path).max_pending_upload == 60.0


@pytest.mark.parametrize(
    "raw, seconds",
    [("0", 0.0), ("off", 0.0), ("OFF", 0.0), ("90", 90.0), ("2m", 120.0), ("250ms", 0.25)],
)
def test_durations_and_off(tmp_path: Path, raw: str, seconds: float) -> None:
    assert settings(tmp_path, "--max-pending-upload", raw).max_pending_upload == seconds
    env = settings(tmp_path, SPOT_AGENT_MAX_PENDING_UPLOAD=raw)
    assert env.max_pending_upload == seconds


@pytest.mark.parametrize(
    "raw, problem", [("-5s", "must not be negative"), ("soon", "or 0/off to turn it off")]
)
def test_a_bad_value_is_one_line_naming_the_setting(tmp_path: Path, raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, SPOT_AGENT_MAX_PENDING_UPLOAD=raw)
    line = str(caught.value)
    assert line.startswith("--max-pending-upload (SPOT_AGENT_MAX_PENDING_UPLOAD): ")
    assert problem in line and "\n" not in line
