"""Server-side encryption against real servers: by default no header is sent, so a
SeaweedFS without a key-encryption key works; AES256 is an explicit choice that needs a
server that serves it (SeaweedFS with a KEK), and one that does not says what to do."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.config import Config

from checkpoint.engine.store.s3 import S3Store
from checkpoint.errors import StoreError
from tests import servers
from tests.conftest import isolate_aws_environment


def _client(server: servers.SeaweedS3) -> object:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def _point_at(server: servers.SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> str:
    isolate_aws_environment(monkeypatch, tmp_path)  # type: ignore[arg-type]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"sse-{uuid.uuid4().hex[:12]}"
    _client(server).create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    return bucket


def test_default_sends_no_header_and_works_without_a_kek(
    seaweedfs: servers.SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    bucket = _point_at(seaweedfs, monkeypatch, tmp_path)
    store = S3Store.from_uri(f"s3://{bucket}/job")
    store.put_object("objects/x", b"data")
    assert store.put_object_if_absent("manifests/1", b"m")
    head = _client(seaweedfs).head_object(Bucket=bucket, Key="job/objects/x")  # type: ignore[attr-defined]
    assert "ServerSideEncryption" not in head
    assert store.get_object("objects/x") == b"data"


def test_explicit_aes256_on_a_server_without_a_kek_says_what_to_do(
    seaweedfs: servers.SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    bucket = _point_at(seaweedfs, monkeypatch, tmp_path)
    store = S3Store.from_uri(f"s3://{bucket}/job", sse="AES256", max_attempts=1)
    with pytest.raises(StoreError) as error:
        store.put_object("objects/x", b"data")
    message = str(error.value)
    assert "\n" not in message
    assert "may not support server-side encryption AES256" in message, message


def test_explicit_aes256_on_a_server_that_serves_it(
    seaweedfs_sse: servers.SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    bucket = _point_at(seaweedfs_sse, monkeypatch, tmp_path)
    store = S3Store.from_uri(f"s3://{bucket}/job", sse="AES256")
    store.put_object("objects/x", b"secret")
    assert store.put_object_if_absent("manifests/1", b"c")
    client = _client(seaweedfs_sse)
    for key in ("job/objects/x", "job/manifests/1"):
        head = client.head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
        assert head["ServerSideEncryption"] == "AES256", key
    assert store.get_object("objects/x") == b"secret"
