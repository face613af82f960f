"""Streamed GETs read from the socket into a reused buffer (``reads._read_direct``).

Through botocore's real client and urllib3's pool, against a small HTTP server on
127.0.0.1 that answers each GetObject as a test says: whole, cut short cleanly, reset, or
stalled past the read timeout. (``test_s3_body_reads`` covers the same edges on the
piece-by-piece path, through a fake raw stream.)
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import botocore.session
import pytest
from botocore.config import Config

from checkpoint.engine.store.s3 import S3Store, reads
from checkpoint.engine.store.s3.reads import BODY_READ_ATTEMPTS, READ_PIECE
from checkpoint.errors import StoreError

DATA = bytes(range(251)) * (3 * READ_PIECE // 251 + 9)  # three pieces and a bit, no period


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.answers: list[str] = []  # one per GET, in order; "whole" once they run out
        self.gets = 0
        self.connections: set[tuple[str, int]] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that drops its connection (the tests make them) is no error here


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the pool reuses a connection read to its end
    server: Server

    def do_GET(self) -> None:
        self.server.gets += 1
        self.server.connections.add(self.client_address)
        answer = self.server.answers.pop(0) if self.server.answers else "whole"
        self.send_response(200)
        self.send_header("Content-Length", str(len(DATA)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if answer == "whole":
            self.wfile.write(DATA)
            return
        self.wfile.write(DATA[: READ_PIECE + 1000])
        self.wfile.flush()
        if answer == "stall":
            time.sleep(2.0)  # past the client's read timeout
        elif answer == "reset":  # RST instead of FIN
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.close_connection = True  # "short": FIN after fewer bytes than promised

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=30)


def store_for(srv: Server) -> S3Store:
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            read_timeout=0.5,
            connect_timeout=5,
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
            response_checksum_validation="when_required",
        ),
    )
    assert client.meta.endpoint_url == endpoint  # loopback only, checked before any call
    return S3Store("bucket", "job", client=client)


def streamed(store: S3Store) -> tuple[bytes, list[int], set[type]]:
    out = bytearray(len(DATA))
    starts: list[int] = []
    kinds: set[type] = set()

    def sink(pos: int, piece: bytes | memoryview) -> None:
        if pos == 0:
            starts.append(pos)
        kinds.add(type(piece))
        out[pos : pos + len(piece)] = piece

    assert store.get_object_into("blobs/x", sink, max_bytes=len(DATA)) == len(DATA)
    return bytes(out), starts, kinds


def test_a_body_is_read_into_the_buffer_and_its_connection_reused(server: Server) -> None:
    store = store_for(server)
    for _ in range(3):
        data, starts, kinds = streamed(store)
        assert data == DATA and starts == [0]
        assert kinds == {memoryview}  # the direct path, not botocore's bytes
    assert server.gets == 3
    assert len(server.connections) == 1  # each body read to its end went back to the pool


@pytest.mark.parametrize("cut", ["short", "reset"])
def test_a_body_cut_short_is_read_again_from_its_start(server: Server, cut: str) -> None:
    server.answers = [cut]
    data, starts, _ = streamed(store_for(server))
    assert data == DATA
    assert server.gets == 2
    if cut == "short":  # a reset may drop the bytes the client had not read yet: all of them
        assert starts == [0, 0]  # the sink was told to start over


@pytest.mark.parametrize(
    ("cut", "what"),
    [
        ("short", f"s3:GetObject failed after 4 attempts: {READ_PIECE + 1000} read, but total "
         f"bytes expected is {len(DATA)}."),
        ("stall", "s3:GetObject timed out waiting for S3 after 4 attempts: Read timeout on "
         "endpoint URL: "),
    ],
)  # fmt: skip
def test_retries_exhausted_is_one_line(server: Server, cut: str, what: str) -> None:
    server.answers = [cut] * BODY_READ_ATTEMPTS
    with pytest.raises(StoreError) as error:
        streamed(store_for(server))
    message = str(error.value)
    assert message.startswith(f"s3://bucket/job/blobs/x: {what}")
    assert "\n" not in message
    assert error.value.transient
    assert server.gets == BODY_READ_ATTEMPTS


def test_a_failing_sink_is_not_retried_and_its_connection_is_dropped(server: Server) -> None:
    store = store_for(server)

    def sink(pos: int, piece: bytes | memoryview) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        store.get_object_into("blobs/x", sink, max_bytes=len(DATA))
    assert server.gets == 1
    data, _, _ = streamed(store)  # a connection left half read is not reused
    assert data == DATA
    assert len(server.connections) == 2


def test_a_body_that_is_not_plain_http_is_read_through_botocore(server: Server) -> None:
    """The fallback: anything but urllib3's response over http.client's is read as before."""

    class Other:
        _raw_stream = object()

    assert reads._direct(Other()) is None
    assert reads._direct(object()) is None
