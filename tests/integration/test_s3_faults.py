"""S3 faults between the agent and a real S3 server: a fault-injecting proxy on 127.0.0.1.

A sync either commits correctly or fails loudly and leaves the previous checkpoint
restorable; restore retries and verifies.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.save.upload import PACK_THRESHOLD
from checkpoint.engine.store.s3 import S3Store
from checkpoint.errors import ObjectTooLarge, StoreError
from tests.agentproc import start_agent
from tests.faultproxy import FaultProxy, fault_proxy
from tests.integration.test_sync import tree
from tests.servers import SeaweedS3
from tests.stores import s3_agent_env

CHUNK = 64 * 1024


@pytest.fixture
def proxy(seaweedfs: SeaweedS3) -> Iterator[FaultProxy]:
    with fault_proxy(seaweedfs.endpoint) as p:
        yield p


@pytest.fixture
def store(
    s3_env: SeaweedS3,
    s3_bucket: tuple[str, str],
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[S3Store]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    s = S3Store.from_uri(f"s3://{s3_bucket[1]}/f", read_timeout=1.0, max_attempts=4)
    yield s
    s.close()


def fill(src: Path, n: int, tag: str) -> None:
    src.mkdir(exist_ok=True)
    for i in range(n):
        (src / f"f{i}").write_bytes(tag.encode() + os.urandom(CHUNK))


def ckpt(store: S3Store, d: Path, pack_threshold: int = PACK_THRESHOLD) -> Checkpointer:
    """``pack_threshold=0``: one blob per chunk, so that faults spread over many requests."""
    return Checkpointer(
        JobStore(store, "job"), d, attempt=1, chunk_size=CHUNK, pack_threshold=pack_threshold
    )


def test_slowdown_bursts_and_resets_are_retried_and_commit_correctly(
    tmp_path: Path, store: S3Store, proxy: FaultProxy
) -> None:
    src = tmp_path / "src"
    fill(src, 12, "a")
    proxy.inject("503", 3, method="PUT")
    proxy.inject("reset", 2, method="PUT")
    r = ckpt(store, src, pack_threshold=0).sync_once("bursty")
    assert r.sequence == 1
    assert proxy.faults == 5
    dst = tmp_path / "dst"
    assert ckpt(store, dst).restore().manifest is not None
    assert tree(dst) == tree(src)


def test_stalls_past_the_read_timeout_fail_loudly_and_keep_the_previous_checkpoint(
    tmp_path: Path, store: S3Store, proxy: FaultProxy
) -> None:
    src = tmp_path / "src"
    fill(src, 3, "good")
    c = ckpt(store, src)
    assert c.sync_once("one").sequence == 1
    good = tree(src)
    fill(src, 3, "new")
    proxy.inject("stall", 1000, method="PUT", seconds=3)
    with pytest.raises(StoreError, match="PutObject"):
        c.sync_once("two")
    proxy.clear()
    dst = tmp_path / "dst"
    r = ckpt(store, dst).restore()
    assert r.manifest is not None and r.manifest.sequence == 1
    assert tree(dst) == good
    assert c.sync_once("three").sequence == 2  # once the store answers again


def test_restore_retries_truncated_and_failed_downloads(
    tmp_path: Path, store: S3Store, proxy: FaultProxy
) -> None:
    src = tmp_path / "src"
    fill(src, 6, "t")
    ckpt(store, src, pack_threshold=0).sync_once("one")
    proxy.inject("truncate", 3, method="GET", path="/blobs/")
    proxy.inject("503", 2, method="GET", path="/blobs/")
    dst = tmp_path / "dst"
    r = ckpt(store, dst).restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    assert tree(dst) == tree(src)
    assert proxy.faults == 5


def test_restore_retries_truncated_and_failed_ranged_reads_of_a_pack(
    tmp_path: Path, store: S3Store, proxy: FaultProxy
) -> None:
    src = tmp_path / "src"
    fill(src, 6, "t")
    assert ckpt(store, src).sync_once("one").packs_uploaded == 1
    proxy.inject("truncate", 1, method="GET", path="/packs/")
    proxy.inject("503", 2, method="GET", path="/packs/")
    dst = tmp_path / "dst"
    r = ckpt(store, dst).restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    assert tree(dst) == tree(src)
    assert proxy.faults == 3


def two_checkpoints(tmp_path: Path, store: S3Store) -> Path:
    src = tmp_path / "src"
    fill(src, 2, "one")
    c = ckpt(store, src, pack_threshold=0)
    assert c.sync_once("one").sequence == 1
    fill(src, 2, "two")
    assert c.sync_once("two").sequence == 2
    return src


def test_a_manifest_cut_short_once_is_read_again(
    tmp_path: Path, store: S3Store, proxy: FaultProxy
) -> None:
    """Half a manifest once used to read as "no checkpoint" (or exit 69 on a cut)."""
    src = two_checkpoints(tmp_path, store)
    proxy.inject("truncate", 1, method="GET", path="/manifests/0000000002")
    proxy.inject("reset", 1, method="GET", path="/manifests/0000000002")
    dst = tmp_path / "dst"
    r = ckpt(store, dst).restore()
    assert r.manifest is not None and r.manifest.sequence == 2 and not r.skipped
    assert tree(dst) == tree(src)
    assert proxy.faults == 2


def test_a_manifest_that_never_reads_falls_back_loudly_but_never_means_none(
    tmp_path: Path, store: S3Store, proxy: FaultProxy
) -> None:
    two_checkpoints(tmp_path, store)
    proxy.inject("truncate", 1000, method="GET", path="/manifests/0000000002")
    r = ckpt(store, tmp_path / "dst").restore()
    assert r.manifest is not None and r.manifest.sequence == 1
    assert [seq for seq, _ in r.skipped] == [2]
    proxy.clear()
    proxy.inject("truncate", 1000, method="GET", path="/manifests/")
    with pytest.raises(StoreError, match="GetObject"):  # not "no checkpoint": start nothing
        ckpt(store, tmp_path / "dst2").restore()


def test_an_oversized_object_at_a_blob_key_is_refused_unread(
    tmp_path: Path, store: S3Store, proxy: FaultProxy
) -> None:
    src = two_checkpoints(tmp_path, store)
    job = JobStore(store, "job")
    h = job.load_manifest(2).files[0].chunks[0].digest
    store.put_object(job.blob_key(h), b"\0" * (8 << 20))
    with pytest.raises(ObjectTooLarge):
        store.get_object(job.blob_key(h), max_bytes=CHUNK + 10)
    before = proxy.requests
    r = ckpt(store, tmp_path / "dst").restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and r.skipped
    assert proxy.requests - before < 20  # refused at the headers, not retried or read
    assert src.exists()


STUCK_JOB = textwrap.dedent(
    """
    import checkpoint, os, time
    checkpoint.save_bytes("data", os.urandom(300_000))
    checkpoint.request_sync(wait=30)
    with checkpoint.saving():  # a second whole save, for the final checkpoint to commit
        checkpoint.save_bytes("data", os.urandom(300_000))
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_a_store_that_hangs_at_the_end_costs_the_deadline_not_the_checkpoint(
    tmp_path: Path, s3_env: SeaweedS3, s3_bucket: tuple[str, str], proxy: FaultProxy
) -> None:
    seaweedfs = s3_env
    env = s3_agent_env(tmp_path, seaweedfs, f"s3://{s3_bucket[1]}/hang")
    env["AWS_ENDPOINT_URL_S3"] = proxy.url
    grace = 6.0
    r = start_agent(
        tmp_path,
        ["--job-id", "hang", "--grace-period", f"{grace}s", "--upload-reserve", "3s"],
        [sys.executable, "-c", STUCK_JOB],
        env=env,
    )
    r.wait_for(lambda: r.has_line("ready"), what="the first checkpoint")
    proxy.inject("stall", 10_000, method="PUT", seconds=120)  # S3 stops answering writes
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    assert r.wait(60) == 79  # interrupted, final checkpoint not committed (75 = committed)
    took = time.monotonic() - t0
    assert took < grace + 3, f"the agent overran its deadline: {took:.1f}s"
    failed = r.event("sync.final_failed")
    assert failed["restorable"] == 1 and "deadline" in failed["error"]
    assert r.event("agent.exit")["restorable"] == 1
    proxy.clear()
    job = JobStore(S3Store.from_uri(f"s3://{s3_bucket[1]}/hang"), "hang")
    assert job.sequences() == [1]
