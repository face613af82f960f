"""Sync, restore and gc against a real S3 server (SeaweedFS on 127.0.0.1, over HTTP)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.gc import collect_garbage
from checkpoint.engine.save.upload import PACK_THRESHOLD
from checkpoint.engine.store.s3 import S3Store
from checkpoint.errors import ConditionalWritesUnsupported
from tests.integration.test_sync_local import tree
from tests.servers import SeaweedS3

REPO = Path(__file__).resolve().parents[2]
CHUNK = 256 * 1024


@pytest.fixture
def store(s3_env: SeaweedS3, s3_bucket: tuple[str, str]) -> S3Store:
    return S3Store.from_uri(f"s3://{s3_bucket[1]}/ckpt")


def raw_client(seaweedfs: SeaweedS3) -> object:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=seaweedfs.endpoint,
        region_name="us-east-1",
        aws_access_key_id=seaweedfs.access_key,
        aws_secret_access_key=seaweedfs.secret_key,
        config=Config(s3={"addressing_style": "path"}),
    )


def ckpt(
    store: S3Store, directory: Path, attempt: int = 1, pack_threshold: int = PACK_THRESHOLD
) -> Checkpointer:
    return Checkpointer(
        JobStore(store, "job"),
        directory,
        attempt=attempt,
        chunk_size=CHUNK,
        pack_threshold=pack_threshold,
    )


def test_sync_is_incremental_and_restores_exactly(tmp_path: Path, store: S3Store) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"small{i}").write_bytes(os.urandom(10_000))
    (src / "big").write_bytes(os.urandom(10 * CHUNK))
    c = ckpt(store, src)
    first = c.sync_once("one")
    assert (
        first.sequence == 1
        and first.bytes_uploaded == first.bytes_total == 20 * 10_000 + 10 * CHUNK
    )
    with open(src / "big", "ab") as fh:
        fh.write(os.urandom(CHUNK))
    (src / "d" / "small3").write_bytes(os.urandom(10_000))
    second = c.sync_once("two")
    assert second.sequence == 2
    assert second.bytes_uploaded == CHUNK + 10_000  # the appended chunk and one small file
    dst = tmp_path / "dst"
    r = ckpt(store, dst, attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 2
    assert tree(dst) == tree(src)


def test_objects_are_laid_out_as_documented_with_no_encryption_header(
    tmp_path: Path, store: S3Store, s3_bucket: tuple[str, str], seaweedfs: SeaweedS3
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"hello")  # small: packed (a pack of just these 5 bytes)
    big = os.urandom(PACK_THRESHOLD)  # not small: 4 chunks, each its own blob
    (src / "g").write_bytes(big)
    ckpt(store, src).sync_once("one")
    client = raw_client(seaweedfs)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket[1])["Contents"])  # type: ignore[attr-defined]
    pack = hashlib.sha256(b"hello").hexdigest()
    blob = hashlib.sha256(big[:CHUNK]).hexdigest()
    assert f"ckpt/job/packs/{pack[:2]}/{pack}" in keys
    assert f"ckpt/job/blobs/{blob[:2]}/{blob}" in keys
    assert "ckpt/job/manifests/0000000001.json" in keys
    assert len(keys) == 1 + 4 + 1
    for key in (f"ckpt/job/packs/{pack[:2]}/{pack}", f"ckpt/job/blobs/{blob[:2]}/{blob}"):
        head = client.head_object(Bucket=s3_bucket[1], Key=key)  # type: ignore[attr-defined]
        assert "ServerSideEncryption" not in head  # none asked: the bucket's default applies


def test_damaged_object_falls_back_loudly(
    tmp_path: Path, store: S3Store, s3_bucket: tuple[str, str], seaweedfs: SeaweedS3
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    c = ckpt(store, src, pack_threshold=0)  # a blob; test_packs damages a pack
    (src / "state").write_bytes(b"one")
    c.sync_once("1")
    (src / "state").write_bytes(b"two")
    c.sync_once("2")
    digest = hashlib.sha256(b"two").hexdigest()
    raw_client(seaweedfs).put_object(  # type: ignore[attr-defined]
        Bucket=s3_bucket[1], Key=f"ckpt/job/blobs/{digest[:2]}/{digest}", Body=b"tw0"
    )
    r = ckpt(store, tmp_path / "dst").restore()
    assert r.manifest is not None and r.manifest.sequence == 1
    assert r.skipped and r.skipped[0][0] == 2
    assert (tmp_path / "dst" / "state").read_bytes() == b"one"


def test_commit_without_conditional_writes_falls_back_to_the_fence(
    tmp_path: Path, store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(key: str, data: bytes) -> bool:
        raise ConditionalWritesUnsupported("If-None-Match is not supported here")

    monkeypatch.setattr(store, "put_object_if_absent", refuse)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    job = JobStore(store, "job")
    attempt = job.claim_attempt({})
    assert attempt == 1
    c = Checkpointer(job, src, attempt=attempt)
    assert c.sync_once("one").sequence == 1
    (src / "a").write_text("b")
    assert c.sync_once("two").sequence == 2
    m1 = job.load_manifest(1)
    assert not job.commit(m1)  # an existing sequence is never written again


SLOW_SYNC = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from checkpoint.engine.store.s3 import S3Store
    from checkpoint.engine.checkpointer import Checkpointer
    from checkpoint.engine.format.jobstore import JobStore

    class Slow(S3Store):
        def put_object(self, key, data, *, sha256=None):
            super().put_object(key, data, sha256=sha256)
            os.write(1, b"uploaded\\n")
            time.sleep(0.05)

    store = Slow.from_uri(sys.argv[1])
    Checkpointer(  # one blob per file: the kill lands between blob puts
        JobStore(store, "job"), Path(sys.argv[2]), chunk_size=262144, pack_threshold=0
    ).sync_once("doomed")
    print("committed", flush=True)
    """
)


def test_kill_9_during_an_s3_sync_then_restore_gc_and_sync_again(
    tmp_path: Path, store: S3Store
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "state").write_text("committed")
    ckpt(store, src).sync_once("good")
    for i in range(30):
        (src / f"part{i}").write_bytes(os.urandom(CHUNK))
    (src / "state").write_text("uncommitted")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SYNC, store.uri, str(src)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    for _ in range(6):
        assert proc.stdout.readline().strip() == "uploaded"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    job = JobStore(store, "job")
    assert job.sequences() == [1]
    dst = tmp_path / "dst"
    r = ckpt(store, dst).restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    assert tree(dst) == {"state": b"committed"}

    dry = collect_garbage(job, min_age=timedelta(0), dry_run=True)
    # the committed state is in a pack; the killed sync's blobs are referenced by nothing
    assert dry.deleted >= 6 and dry.referenced == 0 and dry.packs_referenced == 1
    young = collect_garbage(job)  # the default min age protects a sync that may be running
    assert young.deleted == 0 and young.kept_young == dry.deleted
    done = collect_garbage(job, min_age=timedelta(0))
    assert done.deleted == dry.deleted
    assert ckpt(store, tmp_path / "dst2").restore().manifest is not None

    assert ckpt(store, src).sync_once("after").sequence == 2
    dst3 = tmp_path / "dst3"
    ckpt(store, dst3).restore()
    assert tree(dst3) == tree(src)
