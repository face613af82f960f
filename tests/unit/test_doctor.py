"""doctor's verdicts on disk and clock, in-process (the e2e tests cover the servers)."""

from __future__ import annotations

import argparse
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from agent import doctor
from agent.config import load_settings
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import LocalStore

Usage = namedtuple("Usage", "total used free")


def settings(tmp_path: Path) -> object:
    args = argparse.Namespace(job_id="big", checkpoint_dir=str(tmp_path / "work"))
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path)}
    return load_settings(args, ["true"], env)


@pytest.mark.parametrize(("free", "status"), [(100, "FAIL"), (300_000, "warn"), (10 << 30, "ok")])
def test_disk_against_the_newest_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, status: str
) -> None:
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"x" * 200_000)
    ckpt = Checkpointer(JobStore(store, "big"), src)
    ckpt.sync_once("test")
    ckpt.close()
    real = shutil.disk_usage
    monkeypatch.setattr(
        doctor.shutil,
        "disk_usage",
        lambda p: Usage(*real(p)[:2], free),  # type: ignore[misc]
    )
    check = doctor._disk(settings(tmp_path), store)  # type: ignore[arg-type]
    assert check.status == status, check
    assert "the newest checkpoint (1) is 195.3 KiB" in check.detail


@pytest.mark.parametrize(
    ("offsets", "status"),
    [([0.4, -0.6], "ok"), ([12.2, 11.9], "warn"), ([-900.0], "FAIL"), ([], "skip")],
)
def test_clock_skew(offsets: list[float], status: str) -> None:
    assert doctor._clock(offsets, is_s3=True).status == status
