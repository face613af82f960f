"""What only S3 shows of a sync (SeaweedFS on 127.0.0.1, over HTTP): the objects' keys and
headers in the bucket, and a commit where conditional writes are refused. The scenarios
common to every store run against S3 too, in test_sync.py."""

from __future__ import annotations

import os
from pathlib import Path

import blake3
import boto3
import pytest
from botocore.config import Config

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.save.upload import PACK_THRESHOLD
from checkpoint.engine.store.s3 import S3Store
from checkpoint.errors import ConditionalWritesUnsupported
from tests.servers import SeaweedS3

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


def ckpt(store: S3Store, directory: Path) -> Checkpointer:
    return Checkpointer(JobStore(store, "job"), directory, chunk_size=CHUNK)


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
    # new data is named by BLAKE3: blake3-<hex> under <hex[:2]>/ (format/hashes.py)
    pack = blake3.blake3(b"hello").hexdigest()
    blob = blake3.blake3(big[:CHUNK]).hexdigest()
    pack_key = f"ckpt/job/packs/{pack[:2]}/blake3-{pack}"
    blob_key = f"ckpt/job/blobs/{blob[:2]}/blake3-{blob}"
    assert pack_key in keys
    assert blob_key in keys
    assert "ckpt/job/manifests/0000000001.json" in keys
    assert len(keys) == 1 + 4 + 1
    for key in (pack_key, blob_key):
        head = client.head_object(Bucket=s3_bucket[1], Key=key)  # type: ignore[attr-defined]
        assert "ServerSideEncryption" not in head  # none asked: the bucket's default applies


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
