"""S3Store's URI parsing, client configuration and error mapping, without a real S3.

Error responses come from botocore's Stubber; retries of throttled requests are checked
against a tiny local HTTP server, because the Stubber bypasses the retry handler.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from checkpoint.engine.store.s3 import ConditionalWritesUnsupported, S3Store
from checkpoint.errors import ObjectNotFound, StoreError, StoreUnavailable, StoreURIError

pytestmark = pytest.mark.usefixtures("no_aws_env")

BUCKET = "ckpt-bucket"


@pytest.fixture
def stubbed() -> Iterator[tuple[S3Store, Stubber]]:
    client = boto3.session.Session().client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        endpoint_url="http://127.0.0.1:9",  # never contacted: the Stubber answers
    )
    with Stubber(client) as stubber:
        yield S3Store(BUCKET, "job/7", client=client), stubber
        stubber.assert_no_pending_responses()


# -- URIs and configuration


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://", "'s3://': no bucket name; use s3://bucket/prefix"),
        ("s3:///prefix", "'s3:///prefix': no bucket name; use s3://bucket/prefix"),
        (
            "s3://ab/x",
            "'s3://ab/x': bad bucket name 'ab': a bucket name must be 3 to 63 characters long",
        ),
        (
            "s3://My-Bucket",
            "'s3://My-Bucket': bad bucket name 'My-Bucket': a bucket name must be lower case",
        ),
        (
            "s3://my_bucket",
            "'s3://my_bucket': bad bucket name 'my_bucket': a bucket name may "
            "hold only lower-case letters, digits, '.' and '-', and must begin "
            "and end with a letter or digit",
        ),
        (
            "s3://a..b",
            "'s3://a..b': bad bucket name 'a..b': a bucket name must not have '..', '.-' or '-.'",
        ),
        (
            "s3://10.0.0.1",
            "'s3://10.0.0.1': bad bucket name '10.0.0.1': a bucket name must "
            "not look like an IP address",
        ),
        (
            "s3://bucket/p?versionId=1",
            "'s3://bucket/p?versionId=1': an S3 URI has no '?' or '#' part",
        ),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(StoreURIError) as error:
        S3Store.from_uri(uri)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("uri", "prefix", "full_key"),
    [
        ("s3://bucket", "", "a/b"),
        ("s3://bucket/", "", "a/b"),
        ("s3://bucket/jobs/7", "jobs/7", "jobs/7/a/b"),
        ("s3://bucket//jobs//7/", "jobs/7", "jobs/7/a/b"),
    ],
)
def test_keys_are_joined_to_the_prefix(uri: str, prefix: str, full_key: str) -> None:
    store = S3Store.from_uri(uri)
    assert store.prefix == prefix
    assert store.uri == (f"s3://bucket/{prefix}" if prefix else "s3://bucket")
    assert store.objects.key("a/b") == full_key
    assert store.objects.key("/a/b") == full_key
    assert store.objects.relative(full_key) == "a/b"


def test_client_configuration_for_aws() -> None:
    store = S3Store.from_uri("s3://bucket/p")
    config = store.client.meta.config
    assert store.concurrency == 16
    assert config.max_pool_connections >= store.concurrency
    assert (config.connect_timeout, config.read_timeout) == (5.0, 60.0)
    assert config.retries["mode"] == "standard"
    assert config.retries["total_max_attempts"] == 8
    assert (config.s3 or {}).get("addressing_style") is None  # AWS: virtual-hosted
    assert store.client.meta.endpoint_url.startswith("https://")


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_sdk_endpoint_variables_select_path_addressing(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "http://127.0.0.1:9000")
    client = S3Store.from_uri("s3://bucket/p").client
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.config.s3["addressing_style"] == "path"


def test_addressing_style_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    store = S3Store.from_uri("s3://bucket", addressing_style="virtual")
    assert store.client.meta.config.s3["addressing_style"] == "virtual"
    assert (
        S3Store.from_uri("s3://bucket", addressing_style="auto").client.meta.config.s3[
            "addressing_style"
        ]
        == "path"
    )
    with pytest.raises(ValueError, match="sideways"):
        S3Store.from_uri("s3://bucket", addressing_style="sideways")


def test_the_store_reads_no_setting_of_its_own_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPOT_AGENT_SSE", "AES256")
    monkeypatch.setenv("SPOT_AGENT_SSE_KMS_KEY_ID", "alias/ckpt")
    monkeypatch.setenv("SPOT_AGENT_S3_ADDRESSING_STYLE", "virtual")
    store = S3Store.from_uri("s3://bucket")
    assert store.objects.sse_args() == {}
    assert (store.client.meta.config.s3 or {}).get("addressing_style") is None


def test_encryption_arguments() -> None:
    # by default no header: the bucket's default encryption applies
    assert S3Store.from_uri("s3://bucket").objects.sse_args() == {}
    assert S3Store.from_uri("s3://bucket", sse="AES256").objects.sse_args() == {
        "ServerSideEncryption": "AES256"
    }
    assert S3Store.from_uri("s3://bucket", sse="aws:kms").objects.sse_args() == {
        "ServerSideEncryption": "aws:kms"
    }
    kms = S3Store.from_uri("s3://bucket", sse="aws:kms", kms_key_id="alias/ckpt")
    assert kms.objects.sse_args() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/ckpt",
    }
    with pytest.raises(ValueError, match="only used with sse='aws:kms'"):
        S3Store.from_uri("s3://bucket", sse="AES256", kms_key_id="alias/ckpt")
    with pytest.raises(ValueError, match="only used with sse='aws:kms'"):
        S3Store.from_uri("s3://bucket", kms_key_id="alias/ckpt")
    with pytest.raises(ValueError, match="aes256"):
        S3Store.from_uri("s3://bucket", sse="aes256")


# -- requests and error mapping (Stubber)


def test_put_sends_sha256_and_no_encryption_header_by_default(
    stubbed: tuple[S3Store, Stubber],
) -> None:
    store, stubber = stubbed
    digest = hashlib.sha256(b"data").digest()
    stubber.add_response(
        "put_object",
        {},
        {
            "Bucket": BUCKET,
            "Key": "job/7/objects/x",
            "Body": b"data",
            "ChecksumSHA256": base64.b64encode(digest).decode(),
        },
    )
    store.put_object("objects/x", b"data", sha256=digest.hex())


def test_put_sends_the_encryption_asked_for(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    store = S3Store(BUCKET, "job/7", client=store.client, sse="aws:kms", kms_key_id="alias/ckpt")
    stubber.add_response(
        "put_object",
        {},
        {
            "Bucket": BUCKET,
            "Key": "job/7/objects/x",
            "Body": b"data",
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": "alias/ckpt",
            "ChecksumCRC32": base64.b64encode(zlib.crc32(b"data").to_bytes(4, "big")).decode(),
        },
    )
    store.put_object("objects/x", b"data")  # no sha256 (a BLAKE3-named object): a CRC-32


@pytest.mark.parametrize(
    ("code", "status"), [("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)]
)
def test_conditional_write_lost(stubbed: tuple[S3Store, Stubber], code: str, status: int) -> None:
    store, stubber = stubbed
    stubber.add_client_error(
        "put_object",
        code,
        "no",
        status,
        expected_params={
            "Bucket": BUCKET,
            "Key": "job/7/commit",
            "Body": b"c",
            "IfNoneMatch": "*",
            "ChecksumSHA256": base64.b64encode(hashlib.sha256(b"c").digest()).decode(),
        },
    )
    assert store.put_object_if_absent("commit", b"c") is False


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        (
            "NotImplemented",
            501,
            "A header you provided implies functionality that is not implemented",
        ),
        ("InvalidArgument", 400, "If-None-Match only supports *"),
    ],
)
def test_conditional_writes_unsupported(
    stubbed: tuple[S3Store, Stubber], code: str, status: int, message: str
) -> None:
    store, stubber = stubbed
    stubber.add_client_error("put_object", code, message, status)
    with pytest.raises(ConditionalWritesUnsupported) as error:
        store.put_object_if_absent("commit", b"c")
    assert str(error.value) == (
        f"s3://{BUCKET}/job/7/commit: this S3 service does not support conditional writes "
        f"(If-None-Match: *): {code}: {message}"
    )


def test_other_invalid_argument_is_not_taken_for_unsupported_conditions(
    stubbed: tuple[S3Store, Stubber],
) -> None:
    store, stubber = stubbed
    stubber.add_client_error("put_object", "InvalidArgument", "Bad encryption key", 400)
    with pytest.raises(StoreError) as error:
        store.put_object_if_absent("commit", b"c")
    assert type(error.value) is StoreError
    assert str(error.value) == (
        f"s3://{BUCKET}/job/7/commit: s3:PutObject failed: InvalidArgument: Bad encryption key"
    )


def test_missing_key_is_object_not_found(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_object", "NoSuchKey", "The specified key does not exist.", 404)
    with pytest.raises(ObjectNotFound) as error:
        store.get_object("manifests/3")
    assert error.value.key == "manifests/3"


def test_expired_credentials(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error("get_object", "ExpiredToken", "The token has expired.", 400)
    with pytest.raises(StoreUnavailable) as error:
        store.get_object("manifests/3")
    assert str(error.value) == (
        f"s3://{BUCKET}/job/7/manifests/3: the AWS credentials have expired (ExpiredToken): "
        "renew the session or check the job role"
    )


def test_wrong_region_named_in_the_error_body(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error(
        "list_objects_v2",
        "AuthorizationHeaderMalformed",
        "the region 'us-east-1' is wrong; expecting 'eu-west-1'",
        400,
        service_error_meta={"Region": "eu-west-1"},
    )
    with pytest.raises(StoreUnavailable) as error:
        list(store.list_objects(""))
    assert str(error.value) == (
        f"s3://{BUCKET}: the bucket is in region eu-west-1, not us-east-1 "
        "(set AWS_REGION=eu-west-1)"
    )


def test_wrong_region_from_a_bare_301_head(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error(
        "head_bucket",
        "301",
        "Moved Permanently",
        301,
        response_meta={"HTTPHeaders": {"x-amz-bucket-region": "ap-south-1"}},
    )
    with pytest.raises(StoreUnavailable) as error:
        store.check()
    assert str(error.value) == (
        f"s3://{BUCKET}: the bucket is in region ap-south-1, not us-east-1 "
        "(set AWS_REGION=ap-south-1)"
    )


def test_check_explains_a_bare_403_with_a_listing(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error("head_bucket", "403", "Forbidden", 403)
    stubber.add_client_error(
        "list_objects_v2",
        "AccessDenied",
        "Access Denied",
        403,
        expected_params={"Bucket": BUCKET, "Prefix": "job/7/", "MaxKeys": 1},
    )
    with pytest.raises(StoreUnavailable) as error:
        store.check()
    assert str(error.value) == (
        f"s3://{BUCKET}/job/7: access denied for s3:ListBucket "
        "(check the IAM policy of the job role)"
    )


def test_check_lists_the_prefix_after_the_bucket(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_response("head_bucket", {}, {"Bucket": BUCKET})
    stubber.add_response(
        "list_objects_v2", {"KeyCount": 0}, {"Bucket": BUCKET, "Prefix": "job/7/", "MaxKeys": 1}
    )
    store.check()


def test_unknown_errors_keep_code_and_message(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    stubber.add_client_error("head_object", "WeirdThing", "something odd\nhappened", 418)
    with pytest.raises(StoreError) as error:
        store.exists("x")
    assert str(error.value) == (
        f"s3://{BUCKET}/job/7/x: s3:GetObject failed: WeirdThing: something odd happened"
    )


def test_delete_in_batches_and_report_per_key_errors(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    keys = [f"objects/{n:04d}" for n in range(1500)]
    first = {
        "Bucket": BUCKET,
        "Delete": {"Objects": [{"Key": f"job/7/{k}"} for k in keys[:1000]], "Quiet": True},
    }
    second = {
        "Bucket": BUCKET,
        "Delete": {"Objects": [{"Key": f"job/7/{k}"} for k in keys[1000:]], "Quiet": True},
    }
    stubber.add_response("delete_objects", {}, first)
    stubber.add_response(
        "delete_objects",
        {
            "Errors": [
                {"Key": "job/7/objects/1200", "Code": "AccessDenied", "Message": "Access Denied"},
                {"Key": "job/7/objects/1300", "Code": "InternalError", "Message": "try again"},
            ]
        },
        second,
    )
    with pytest.raises(StoreError) as error:
        store.delete_objects(keys)
    assert str(error.value) == (
        f"s3://{BUCKET}/job/7: could not delete 2 of 1500 objects: "
        "objects/1200 (AccessDenied: Access Denied); objects/1300 (InternalError: try again)"
    )


def test_unsupported_encryption_gets_a_hint(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stubber = stubbed
    store = S3Store(BUCKET, "job/7", client=store.client, sse="AES256")
    stubber.add_client_error(
        "put_object",
        "InternalError",
        "We encountered an internal error",
        500,
        expected_params={
            "Bucket": BUCKET,
            "Key": ANY,
            "Body": ANY,
            "ServerSideEncryption": "AES256",
            "ChecksumCRC32": ANY,
        },
    )
    with pytest.raises(StoreError) as error:
        store.put_object("x", b"x")
    assert str(error.value) == (
        f"s3://{BUCKET}/job/7/x: s3:PutObject failed: InternalError: We encountered an "
        "internal error (this S3 service may not support server-side encryption AES256: "
        "ask for none and let the bucket's default apply)"
    )


# -- throttling is retried (real HTTP)


class _SlowDownTwice(http.server.BaseHTTPRequestHandler):
    """Answers the first two PUTs with 503 SlowDown, then accepts."""

    requests: list[str]
    throttle: int

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append(self.path)
        if len(self.requests) <= self.throttle:
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message></Error>"
            )
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
        else:
            body = b""
            self.send_response(200)
            self.send_header("ETag", '"0"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_down_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_SlowDownTwice]]:
    handler = type("Handler", (_SlowDownTwice,), {"requests": [], "throttle": 2})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_throttling_is_retried(slow_down_server: type[_SlowDownTwice]) -> None:
    S3Store.from_uri("s3://bucket/job").put_object("x", b"x")
    assert slow_down_server.requests == ["/bucket/job/x"] * 3


def test_throttling_beyond_the_budget(slow_down_server: type[_SlowDownTwice]) -> None:
    with pytest.raises(StoreError) as error:
        S3Store.from_uri("s3://bucket/job", max_attempts=2).put_object("x", b"x")
    assert str(error.value) == (
        "s3://bucket/job/x: s3:PutObject failed after 2 attempts: SlowDown: "
        "Please reduce your request rate."
    )
