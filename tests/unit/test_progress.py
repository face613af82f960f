"""Progress of long transfers (issue 15): ``sync.progress`` and ``restore.progress``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.config import EngineConfig
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.progress import Progress
from checkpoint.engine.store.base import LocalStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reports_at_most_every_interval_with_rate_and_time_left() -> None:
    clock, seen = Clock(), []
    p = Progress(
        "sync.progress", 1000, listener=lambda e, f: seen.append((e, f)), every=5.0, clock=clock
    )
    clock.now += 1.0
    p.add(100)  # too soon: nothing
    assert seen == []
    clock.now += 4.0
    p.add(150)  # 5 s in, 250 of 1000 bytes: 50 B/s, 15 s left
    assert seen == [
        (
            "sync.progress",
            {
                "bytes_done": 250,
                "bytes_total": 1000,
                "percent": 25.0,
                "rate_bytes_per_second": 50,
                "eta_seconds": 15.0,
                "elapsed_seconds": 5.0,
            },
        )
    ]
    clock.now += 1.0
    p.add(10)  # 1 s after the last report: nothing
    assert len(seen) == 1


def test_a_transfer_shorter_than_the_interval_says_nothing() -> None:
    seen: list[Any] = []
    p = Progress("restore.progress", 10, listener=lambda e, f: seen.append(f), every=3600)
    p.add(10)
    assert seen == []


def test_sync_and_restore_report_their_bytes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 << 20))
    (src / "small").write_bytes(os.urandom(1000))
    job = JobStore(LocalStore(tmp_path / "store"), "progress")
    seen: list[tuple[str, dict[str, Any]]] = []

    def listener(event: str, fields: dict[str, Any]) -> None:
        seen.append((event, fields))

    every_add = EngineConfig(chunk_size=1 << 20, progress_seconds=0.0)  # a report each add
    ckpt = Checkpointer(job, src, progress=listener, config=every_add)
    try:
        assert ckpt.sync_once("test").sequence == 1
    finally:
        ckpt.close()
    synced = [f for e, f in seen if e == "sync.progress"]
    assert synced and {f["bytes_total"] for f in synced} == {(3 << 20) + 1000}
    assert [f["bytes_done"] for f in synced] == sorted(f["bytes_done"] for f in synced)
    assert synced[-1]["bytes_done"] == (3 << 20) + 1000

    seen.clear()
    other = Checkpointer(job, dst, progress=listener, config=every_add)
    try:
        assert other.restore().manifest is not None
    finally:
        other.close()
    restored = [f for e, f in seen if e == "restore.progress"]
    assert (
        restored and restored[-1]["bytes_done"] == restored[-1]["bytes_total"] == (3 << 20) + 1000
    )
    assert (dst / "big").read_bytes() == (src / "big").read_bytes()


def test_checkpoints_restore_prints_a_line_per_report_when_not_a_terminal() -> None:
    import io

    from agent.checkpoints_cli.restore import ProgressLine

    out = io.StringIO()
    line = ProgressLine(out)
    figures = Progress("restore.progress", 4 << 20, every=0.0).figures()
    line("restore.progress", {**figures, "bytes_done": 1 << 20, "percent": 25.0})
    line.end()
    assert out.getvalue().startswith("restoring: 1.0 MiB of 4.0 MiB (25%), ")
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()


def test_a_sync_that_reads_unchanged_files_again_counts_them_and_stays_within_100(
    tmp_path: Path,
) -> None:
    """Issue 23: the final sync re-read every file but counted only the changed ones as its
    total, and reported 250%. Files read again are part of the total."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(2 << 20))
    (src / "b").write_bytes(os.urandom(2 << 20))
    old = 1_600_000_000
    for name in ("a", "b"):  # old enough for the stat cache to vouch for them next time
        os.utime(src / name, (old, old))
    seen: list[dict[str, Any]] = []
    ckpt = Checkpointer(
        JobStore(LocalStore(tmp_path / "store"), "again"),
        src,
        progress=lambda e, f: seen.append(f) if e == "sync.progress" else None,
        config=EngineConfig(chunk_size=1 << 20, progress_seconds=0.0),  # a report each add
    )
    try:
        assert ckpt.sync_once("first").sequence == 1
        (src / "b").write_bytes(os.urandom(1 << 20))  # one file changed, then all read again
        seen.clear()
        result = ckpt.sync_once("interruption", rehash=lambda _st: True)
    finally:
        ckpt.close()
    assert result.sequence == 2 and result.bytes_hashed == 3 << 20
    assert seen and {f["bytes_total"] for f in seen} == {3 << 20}
    assert max(f["percent"] for f in seen) == 100.0
    assert seen[-1]["bytes_done"] == 3 << 20


def test_bytes_beyond_the_total_raise_the_total_not_the_percentage() -> None:
    seen: list[dict[str, Any]] = []
    p = Progress("sync.progress", 1000, listener=lambda e, f: seen.append(f), every=0.0)
    p.add(400)
    p.expect(500)  # a second pass (a repack) will read 500 more
    p.add(350)
    assert seen[-1]["bytes_total"] == 1500 and seen[-1]["percent"] == 50.0
    p.add(1000)  # a file grew while it was read
    assert seen[-1]["percent"] == 100.0 and seen[-1]["bytes_total"] == 1750
