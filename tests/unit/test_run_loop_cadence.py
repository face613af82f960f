"""The run loop's early syncs, in-process: the fake checkpoints report pending bytes, the
loop measures them off its thread and starts an early sync (see test_run_loop.py for the
harness)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent import exits
from tests.unit.test_run_loop import FakeCheckpoints, Harness


class PendingCheckpoints(FakeCheckpoints):
    """Lots of bytes pending until a sync commits them; the cadence's walks are counted
    (the shutdown's own walk, which sizes the reserve, is not)."""

    def __init__(self, pending: int) -> None:
        super().__init__()
        self.pending = pending
        self.threads: list[str] = []

    @property
    def walks(self) -> int:
        return self.threads.count("cadence-walk")

    def pending_bytes(self) -> int:
        self.threads.append(threading.current_thread().name)
        return 0 if self.syncs else self.pending


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, "--max-pending-upload", "1s")
    yield h
    h.release()


def run_until(h: Harness, ready: object) -> int:
    h.post_when(ready, h.sigterm)  # type: ignore[arg-type]
    return h.loop.run()


def test_pending_bytes_beyond_the_threshold_start_an_early_sync(harness: Harness) -> None:
    h = harness
    h.ckpt = ckpt = PendingCheckpoints(pending=1 << 40)  # hours at any assumed rate
    h.loop.scheduler.measure_floor = 0.01
    with capture_logs() as logs:
        code = run_until(h, lambda: "early" in ckpt.syncs)
    assert code == exits.INTERRUPTED
    assert ckpt.syncs == ["early", "interruption"]
    assert ckpt.walks >= 1
    assert threading.main_thread().name not in ckpt.threads  # the loop never walks itself
    early = [e for e in logs if e["event"] == "sync.early"]
    assert len(early) == 1
    assert early[0]["pending_bytes"] == 1 << 40
    assert early[0]["rate_source"] == "assumed"
    assert early[0]["threshold_seconds"] == 1.0
    assert early[0]["estimate_seconds"] > 1.0
    assert early[0]["sync_reason"] == "early"
    assert early[0]["periodic_due_in"] is None  # the harness runs with --sync-interval 0


def test_bytes_that_fit_the_threshold_start_nothing(harness: Harness) -> None:
    h = harness
    h.ckpt = ckpt = PendingCheckpoints(pending=1000)
    h.loop.scheduler.measure_floor = 0.01
    assert run_until(h, lambda: ckpt.walks >= 3) == exits.INTERRUPTED
    assert ckpt.syncs == ["interruption"]


def test_off_means_no_walks(tmp_path: Path) -> None:
    h = Harness(tmp_path, "--max-pending-upload", "off")
    try:
        h.ckpt = ckpt = PendingCheckpoints(pending=1 << 40)
        h.loop.scheduler.measure_floor = 0.01
        ticks = threading.Event()
        threading.Timer(0.3, ticks.set).start()  # several floors go by
        assert run_until(h, ticks.is_set) == exits.INTERRUPTED
        assert ckpt.walks == 0 and ckpt.syncs == ["interruption"]
    finally:
        h.release()
