"""S3Store against a real SeaweedFS S3 gateway over HTTP; moto for what SeaweedFS lacks.

The store builds its client from the SDK's environment (``s3_env``), as in production.
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from checkpoint.engine.store.s3 import S3Store
from checkpoint.engine.store.s3.writes import crc32_header
from checkpoint.engine.store.uri import open_store
from checkpoint.errors import ObjectNotFound, StoreError, StoreUnavailable
from tests import servers

pytestmark = pytest.mark.usefixtures("s3_env")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw_client(
    endpoint: str, key: str = servers.ADMIN_KEY, secret: str = servers.ADMIN_SECRET
) -> object:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


# -- round trips


def test_round_trip_under_a_prefix(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    store = open_store(f"s3://{bucket}//jobs/job-1/")
    assert isinstance(store, S3Store)
    assert store.uri == f"s3://{bucket}/jobs/job-1"
    data = b"state " * 100

    store.put_object("objects/ab/abcdef", data, sha256=sha256(data))
    store.put_object("manifests/000001.json", b"{}")

    assert store.get_object("objects/ab/abcdef") == data
    assert store.exists("manifests/000001.json")
    assert not store.exists("manifests/000002.json")
    with pytest.raises(ObjectNotFound) as missing:
        store.get_object("manifests/000002.json")
    assert missing.value.key == "manifests/000002.json"

    listed = {info.key: info for info in store.list_objects("")}
    assert set(listed) == {"objects/ab/abcdef", "manifests/000001.json"}
    assert listed["objects/ab/abcdef"].size == len(data)
    assert isinstance(listed["objects/ab/abcdef"].modified, datetime)
    assert [i.key for i in store.list_objects("manifests/")] == ["manifests/000001.json"]

    # the objects really sit under the prefix
    keys = [o["Key"] for o in raw_client(endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["jobs/job-1/manifests/000001.json", "jobs/job-1/objects/ab/abcdef"]

    store.delete_objects(["objects/ab/abcdef", "never/existed"])
    assert [i.key for i in store.list_objects("")] == ["manifests/000001.json"]
    store.check()
    store.close()


def test_prefix_does_not_match_a_longer_sibling(s3_bucket: tuple[str, str]) -> None:
    _, bucket = s3_bucket
    S3Store.from_uri(f"s3://{bucket}/job-10").put_object("a", b"other job")
    store = S3Store.from_uri(f"s3://{bucket}/job-1")
    store.put_object("a", b"mine")
    assert [i.key for i in store.list_objects("")] == ["a"]
    assert store.get_object("a") == b"mine"


def test_empty_prefix(s3_bucket: tuple[str, str]) -> None:
    _, bucket = s3_bucket
    store = S3Store.from_uri(f"s3://{bucket}")
    store.put_object("top", b"1")
    store.put_object("dir/inner", b"2")
    assert sorted(i.key for i in store.list_objects("")) == ["dir/inner", "top"]
    assert store.get_object("dir/inner") == b"2"
    store.check()


def test_list_and_delete_more_than_one_page(s3_bucket: tuple[str, str]) -> None:
    _, bucket = s3_bucket
    store = S3Store.from_uri(f"s3://{bucket}/many")
    keys = [f"objects/{n:05d}" for n in range(1100)]
    with ThreadPoolExecutor(store.concurrency) as pool:
        list(pool.map(lambda key: store.put_object(key, b"x"), keys))

    assert sorted(info.key for info in store.list_objects("objects/")) == keys

    store.delete_objects(keys)  # two DeleteObjects batches: 1000 + 100
    assert list(store.list_objects("")) == []


# -- what S3 verifies for us


def test_conditional_write_is_honoured(s3_bucket: tuple[str, str]) -> None:
    _, bucket = s3_bucket
    store = S3Store.from_uri(f"s3://{bucket}/job")
    assert store.put_object_if_absent("commits/000001", b"first") is True
    assert store.put_object_if_absent("commits/000001", b"second") is False
    assert store.get_object("commits/000001") == b"first"


def test_wrong_sha256_is_rejected_by_the_server(s3_bucket: tuple[str, str]) -> None:
    _, bucket = s3_bucket
    store = S3Store.from_uri(f"s3://{bucket}/job")
    with pytest.raises(StoreError) as error:
        store.put_object("objects/x", b"the real bytes", sha256=sha256(b"other bytes"))
    assert re.fullmatch(
        rf"s3://{bucket}/job/objects/x: s3:PutObject failed: BadDigest: .+", str(error.value)
    )
    assert not store.exists("objects/x")


def test_put_without_sha256_sends_a_crc32_the_server_checks(s3_bucket: tuple[str, str]) -> None:
    # A BLAKE3-named object has no SHA-256 to send: the store sends its CRC-32, and
    # SeaweedFS refuses a body that does not match one, as S3 does (BadDigest).
    _, bucket = s3_bucket
    store = S3Store.from_uri(f"s3://{bucket}/job")
    store.put_object("objects/ok", b"the real bytes")
    assert store.get_object("objects/ok") == b"the real bytes"
    client = store.objects.client
    assert client.meta.endpoint_url.startswith("http://127.0.0.1:")
    with pytest.raises(ClientError) as error:
        client.put_object(
            Bucket=bucket,
            Key="job/objects/x",
            Body=b"the real bytes",
            ChecksumCRC32=crc32_header(b"other bytes"),
        )
    assert error.value.response["Error"]["Code"] in (
        "BadDigest",
        "InvalidDigest",
        "XAmzContentChecksumMismatch",
    )
    assert not store.exists("objects/x")


def test_sse_kms_with_a_key_id(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # SeaweedFS answers 500 to aws:kms unless a KMS is configured; moto accepts it.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    raw_client(moto_server).create_bucket(Bucket="kms-bucket")
    store = S3Store.from_uri("s3://kms-bucket/job", sse="aws:kms", kms_key_id="alias/checkpoints")
    assert store.sse == "aws:kms"
    store.put_object("objects/x", b"data")
    head = raw_client(moto_server).head_object(Bucket="kms-bucket", Key="job/objects/x")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == "alias/checkpoints"


def test_no_encryption_header_by_default(s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    store = S3Store.from_uri(f"s3://{bucket}/job")
    store.put_object("plain", b"p")
    assert "ServerSideEncryption" not in raw_client(endpoint).head_object(
        Bucket=bucket, Key="job/plain"
    )


# -- errors, with the exact message a user reads


def test_missing_bucket(s3_bucket: tuple[str, str]) -> None:
    store = S3Store.from_uri("s3://no-such-bucket-here/job")
    expected = (
        "s3://no-such-bucket-here: no such bucket (check the name, and that it is in "
        "us-east-1 or the endpoint you set)"
    )
    with pytest.raises(StoreUnavailable) as error:
        store.check()
    assert str(error.value) == expected
    with pytest.raises(StoreUnavailable) as error:
        store.get_object("manifests/1")
    assert str(error.value) == expected


def test_access_denied_names_action_and_key(
    s3_bucket: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bucket = s3_bucket
    S3Store.from_uri(f"s3://{bucket}/job").put_object("readable", b"r")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", servers.READER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", servers.READER_SECRET)
    store = S3Store.from_uri(f"s3://{bucket}/job")
    store.check()  # reading is allowed
    assert store.get_object("readable") == b"r"
    with pytest.raises(StoreUnavailable) as error:
        store.put_object("objects/x", b"x")
    assert str(error.value) == (
        f"s3://{bucket}/job/objects/x: access denied for s3:PutObject "
        "(check the IAM policy of the job role)"
    )


def test_wrong_secret_key(s3_bucket: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, bucket = s3_bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StoreUnavailable) as error:
        S3Store.from_uri(f"s3://{bucket}/job").check()
    assert str(error.value) == (
        f"s3://{bucket}/job: the request signature does not match (SignatureDoesNotMatch): "
        "check the secret access key"
    )


def test_unknown_access_key(s3_bucket: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, bucket = s3_bucket
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOBODYKNOWS")
    with pytest.raises(StoreUnavailable) as error:
        S3Store.from_uri(f"s3://{bucket}/job").check()
    assert str(error.value) == (
        f"s3://{bucket}/job: the AWS access key or session token is not valid "
        "(InvalidAccessKeyId): check AWS_ACCESS_KEY_ID, AWS_SESSION_TOKEN or the profile"
    )


def test_no_credentials(s3_bucket: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, bucket = s3_bucket
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreUnavailable) as error:
        S3Store.from_uri(f"s3://{bucket}/job").check()
    assert str(error.value) == (
        f"s3://{bucket}: no AWS credentials found (give the job a role, or set "
        "AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    )


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch, closed_endpoint: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", closed_endpoint)
    store = S3Store.from_uri("s3://some-bucket/job", max_attempts=1, connect_timeout=1)
    with pytest.raises(StoreUnavailable) as error:
        store.check()
    assert str(error.value) == (
        f"s3://some-bucket: cannot reach the S3 endpoint {closed_endpoint} "
        f'(Could not connect to the endpoint URL: "{closed_endpoint}/some-bucket")'
    )
