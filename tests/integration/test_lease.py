"""checkpoint.engine.lease on a real local store: a lease's life, and a sweep as an agent
sees it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.lease import (
    LeasePolicy,
    SweepRunning,
    SweepWatch,
    drop_lease,
    finish_sweep,
    live_leases,
    start_sweep,
    write_lease,
)
from checkpoint.engine.store.base import LocalStore


@pytest.fixture
def job(tmp_path: Path) -> JobStore:
    return JobStore(LocalStore(tmp_path / "store"), "job-1")


def test_a_lease_is_live_until_its_time_and_gone_once_dropped(job: JobStore) -> None:
    write_lease(job, 3, "host-a", LeasePolicy(renew_seconds=60, ttl_seconds=180))
    now = datetime.now(UTC)
    (lease,) = live_leases(job, now)
    assert (lease.attempt, lease.host) == (3, "host-a")
    assert "attempt 3 on host-a" in lease.describe(now)
    assert live_leases(job, now + timedelta(seconds=179))
    assert not live_leases(job, now + timedelta(seconds=181))  # kill -9: it expires
    drop_lease(job, 3)
    assert not live_leases(job, now)


def test_a_lease_that_cannot_be_parsed_is_not_taken_for_no_agent(job: JobStore) -> None:
    job.store.put_object(job.lease_key(1), b"\x00 not json")
    now = datetime.now(UTC)
    (lease,) = live_leases(job, now)
    assert lease.expires - lease.renewed == timedelta(seconds=LeasePolicy.ttl_seconds)
    assert "an unknown host" in lease.describe(now)


def test_an_agent_waits_for_a_sweep_then_finds_what_it_took(job: JobStore) -> None:
    job.store.put_object(job.pack_key("aa" * 32), b"pack")
    job.store.put_object(job.blob_key("bb" * 32), b"blob")
    watch = SweepWatch()
    assert watch.gone(job, {"aa" * 32, "bb" * 32}) is None  # no sweep: nothing to check
    sweep = start_sweep(job, "gc")
    with pytest.raises(SweepRunning, match="a gc of this job is running"):
        watch.gone(job, {"aa" * 32})
    job.store.delete_objects([job.pack_key("aa" * 32)])
    finish_sweep(job, sweep)
    assert watch.gone(job, {"aa" * 32, "bb" * 32}) == {"aa" * 32}
    assert watch.gone(job, {"aa" * 32}) is None  # checked once per sweep


def test_a_sweep_is_checked_by_the_ids_chunks_name_objects_by(job: JobStore) -> None:
    """A BLAKE3 id (``blake3:<hex>``) names an object ``blake3-<hex>``: the check after a
    sweep maps the listed names back, so a kept BLAKE3 object is not taken for deleted."""
    kept, taken = "blake3:" + "cc" * 32, "blake3:" + "dd" * 32
    job.store.put_object(job.blob_key(kept), b"blob")
    job.store.put_object(job.pack_key(taken), b"pack")
    watch = SweepWatch()
    sweep = start_sweep(job, "gc")
    job.store.delete_objects([job.pack_key(taken)])
    finish_sweep(job, sweep)
    assert watch.gone(job, {kept, taken, "ee" * 32}) == {taken, "ee" * 32}


def test_a_sync_after_a_forced_sweep_uploads_again_what_it_took(tmp_path: Path) -> None:
    """What the agent took as stored (the base checkpoint's pack) is deleted by a forced
    gc: the next sync does not commit a checkpoint naming it; the one after uploads it
    again, and every stored checkpoint restores."""
    from checkpoint.engine.checkpointer import Checkpointer
    from checkpoint.errors import CheckpointError

    job = JobStore(LocalStore(tmp_path / "store"), "job-1")
    work = tmp_path / "work"
    work.mkdir()
    (work / "constant.bin").write_bytes(b"c" * 100_000)
    (work / "n.json").write_text("1")
    ckpt = Checkpointer(job, work)
    assert ckpt.sync_once("periodic").sequence == 1
    first = job.load_manifest(1)

    sweep = start_sweep(job, "gc")
    job.store.delete_objects(job.pack_key(p) for p in first.pack_ids())
    job.store.delete_objects([job.manifest_key(1)])
    finish_sweep(job, sweep)
    (work / "n.json").write_text("2")
    with pytest.raises(CheckpointError, match="deleted by a forced gc or delete"):
        ckpt.sync_once("periodic")
    assert job.sequences() == []  # nothing committed that names a deleted pack

    result = ckpt.sync_once("periodic")
    assert result.sequence == 2 and result.bytes_uploaded >= 100_000  # uploaded again
    restored = tmp_path / "restored"
    Checkpointer(job, restored).restore()
    assert (restored / "constant.bin").read_bytes() == b"c" * 100_000
    assert (restored / "n.json").read_text() == "2"
