"""The one body-read retry of every S3 GET (``reads.read_body``), at its edges.

botocore retries a request until its headers arrive, never a body cut short after them.
These bodies are botocore's own ``StreamingBody`` over a raw stream that breaks where a
test says (urllib3's errors, as a real connection raises them), behind an in-process
client: a cut at an exact byte cannot be made reliably through a real server.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

from checkpoint.engine.store.s3 import S3Store
from checkpoint.engine.store.s3.bucket import Bucket
from checkpoint.engine.store.s3.reads import BODY_READ_ATTEMPTS, READ_PIECE, read_body
from checkpoint.errors import ObjectNotFound, StoreError

DATA = bytes(range(256)) * (3 * READ_PIECE // 256 + 7)  # three pieces and a bit


class Raw:
    """A raw HTTP body: hands out ``data`` and then breaks as ``cut`` says.

    ``cut``: None reads to the end; ("reset", n) raises a protocol error after n bytes;
    ("timeout", n) a read timeout after n bytes; ("short", n) ends cleanly after n bytes,
    fewer than the Content-Length promised.
    """

    def __init__(self, data: bytes, cut: tuple[str, int] | None) -> None:
        self.data, self.cut, self.pos, self.closed = data, cut, 0, False

    def read(self, amt: int | None = None) -> bytes:
        end = len(self.data) if self.cut is None else self.cut[1]
        if self.cut and self.cut[0] != "short" and (amt is None or self.pos >= end):
            self.pos = end  # reading to the end (or past the cut) meets the break
            if self.cut[0] == "reset":
                raise ProtocolError("Connection broken: connection reset by peer")
            raise Urllib3ReadTimeout(None, None, "Read timed out.")  # type: ignore[arg-type]
        n = end - self.pos if amt is None else min(amt, end - self.pos)
        piece = self.data[self.pos : self.pos + n]
        self.pos += n
        return piece

    def close(self) -> None:
        self.closed = True


class Client:
    """Answers each GET with the next of ``cuts``: a body that breaks there (None: whole)."""

    def __init__(self, data: bytes, cuts: list[tuple[str, int] | None]) -> None:
        self.data, self.cuts = data, list(cuts)
        self.raws: list[Raw] = []
        self.meta = SimpleNamespace(region_name="us-east-1", endpoint_url="http://127.0.0.1:9")

    def get_object(self, **args: Any) -> dict[str, Any]:
        data = self.data
        if "Range" in args:
            start, end = args["Range"].removeprefix("bytes=").split("-")
            data = data[int(start) : int(end) + 1]
        raw = Raw(data, self.cuts.pop(0) if self.cuts else None)
        self.raws.append(raw)
        return {"ContentLength": len(data), "Body": StreamingBody(raw, len(data))}


def store_over(client: Client) -> S3Store:
    return S3Store("bucket", "job", client=client)


def streamed(store: S3Store) -> tuple[bytes, list[int]]:
    """The bytes get_object_into hands over, assembled as a sink would, and each start."""
    out = bytearray(len(DATA))
    starts: list[int] = []

    def sink(pos: int, piece: bytes) -> None:
        if pos == 0:
            starts.append(pos)
        out[pos : pos + len(piece)] = piece

    n = store.get_object_into("blobs/x", sink, max_bytes=len(DATA))
    assert n == len(DATA)
    return bytes(out), starts


def test_a_body_broken_mid_read_is_read_again_from_its_start() -> None:
    client = Client(DATA, [("reset", READ_PIECE + 5)])
    data, starts = streamed(store_over(client))
    assert data == DATA
    assert starts == [0, 0]  # the sink was told to start over
    assert len(client.raws) == 2 and all(raw.closed for raw in client.raws)


def test_an_incomplete_body_is_read_again() -> None:
    # the connection ends cleanly, short of the Content-Length: botocore's IncompleteRead
    client = Client(DATA, [("short", 10)])
    assert store_over(client).get_object("blobs/x") == DATA
    assert len(client.raws) == 2


def test_a_read_timeout_mid_body_is_read_again() -> None:
    client = Client(DATA, [("timeout", 3), ("timeout", 0)])
    assert store_over(client).get_range("blobs/x", 100, 50) == DATA[100:150]
    assert len(client.raws) == 3


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("reset", "s3:GetObject failed after 4 attempts: An error occurred while reading "
         "from response stream: Connection broken: connection reset by peer"),
        ("short", "s3:GetObject failed after 4 attempts: 10 read, but total bytes expected "
         f"is {len(DATA)}."),
        ("timeout", "s3:GetObject timed out waiting for S3 after 4 attempts: Read timeout "
         'on endpoint URL: "None"'),
    ],
)  # fmt: skip
def test_retries_exhausted_is_one_line(kind: str, what: str) -> None:
    client = Client(DATA, [(kind, 10)] * BODY_READ_ATTEMPTS)
    with pytest.raises(StoreError) as error:
        store_over(client).get_object("blobs/x")
    assert str(error.value) == f"s3://bucket/job/blobs/x: {what}"
    assert error.value.transient  # the network, not the request: worth a later try
    assert len(client.raws) == BODY_READ_ATTEMPTS and all(raw.closed for raw in client.raws)


def test_a_failing_sink_is_not_retried_and_its_body_is_closed() -> None:
    client = Client(DATA, [])

    def sink(pos: int, piece: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        store_over(client).get_object_into("blobs/x", sink, max_bytes=len(DATA))
    assert len(client.raws) == 1 and client.raws[0].closed


def test_a_request_that_fails_is_not_made_again_here() -> None:
    """Failures before the body are botocore's to retry (it has): not read_body's."""
    opened: list[int] = []
    bucket = Bucket(Client(DATA, []), "bucket", "job")

    def open_body() -> Any:
        opened.append(1)
        raise ObjectNotFound("blobs/x")

    with pytest.raises(ObjectNotFound):
        read_body(bucket, "job/blobs/x", open_body, bytes)
    assert opened == [1]


@pytest.mark.parametrize("attempts", [1, 2])
def test_attempts_counts_every_get(attempts: int) -> None:
    client = Client(DATA, [("reset", 0)] * attempts)
    bucket = Bucket(client, "bucket", "job")
    read: Callable[[Any], bytes] = lambda body: body.read()  # noqa: E731
    with pytest.raises(StoreError) as error:
        read_body(
            bucket, "job/blobs/x", lambda: client.get_object()["Body"], read, attempts=attempts
        )
    assert len(client.raws) == attempts
    assert ("after 2 attempts" in str(error.value)) == (attempts == 2)
    assert "after 1 attempts" not in str(error.value)


def test_a_missing_key_is_object_not_found_at_once() -> None:
    class Missing(Client):
        def get_object(self, **args: Any) -> dict[str, Any]:
            self.raws.append(Raw(b"", None))
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no"}}, "GetObject")

    client = Missing(DATA, [])
    with pytest.raises(ObjectNotFound) as error:
        store_over(client).get_object_into("blobs/x", lambda pos, piece: None, max_bytes=1)
    assert error.value.key == "blobs/x"
    assert len(client.raws) == 1
