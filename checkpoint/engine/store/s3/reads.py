"""GETs: whole objects, objects streamed to a sink in pieces, byte ranges.

botocore retries a request (throttling, 5xx, a reset) until its response headers arrive,
never a body cut short after them: a connection reset or a read timeout mid-body, or
fewer bytes than the Content-Length promised. :func:`read_body` is that one retry, shared
by every read: the GET is made again and the body read again from its start, at most
:data:`BODY_READ_ATTEMPTS` times in all.

A streamed GET reads its body straight from the socket into one buffer its thread reuses
(:func:`_read_direct`), where botocore's body is the plain HTTP response it always is here:
a chain of bytes objects per piece costs more in the kernel than the transfer itself.
"""

from __future__ import annotations

import http.client
import io
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from urllib3.response import HTTPResponse

from checkpoint.errors import ObjectNotFound, ObjectTooLarge

from .bucket import Bucket
from .explain import error_of

#: A GET whose body is cut short is made this many times in all.
BODY_READ_ATTEMPTS = 4
#: The piece a streamed GET reads at a time (see :func:`get_object_into`). The direct path
#: reads each into one buffer its thread reuses; the kernel's copies into it and out of it
#: to the file, and the hash between, cost least while the buffer stays in the core's
#: cache. Restoring one file from a local SeaweedFS, idle 2-core machine, medians
#: (``python -m bench.readpiece --pieces ...``): 2 GiB, 5 runs: 3.11 s at 64 KiB, 2.84 s
#: at 128 KiB, 3.18 s at 256 KiB (system time 1.46, 1.07, 1.79 s), 4.80 s at 1 MiB;
#: 4 GiB, 3 runs: 5.96 s at 128 KiB, 8.26 s at 256 KiB (s5cmd: 5.01 s).
READ_PIECE = 128 << 10
#: what a body cut short raises while it is read
BODY_CUT = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError)

T = TypeVar("T")


def read_body(
    bucket: Bucket,
    full_key: str,
    open_body: Callable[[], Any],
    read: Callable[[Any], T],
    *,
    attempts: int = BODY_READ_ATTEMPTS,
) -> T:
    """``read(open_body())``, made again from the GET when the body is cut short.

    ``open_body`` makes the request and returns its body (it raises what it explains
    itself; botocore has retried it already). ``read`` reads the body and may be called
    again, from the start, on a new body. The body is closed however ``read`` ends: one
    left unread (the caller's sink failed) drops its connection instead of returning it to
    the pool half read. After ``attempts`` cuts, one line: the key, the cut, how many tries.
    """
    attempt = 1
    while True:
        body = open_body()
        try:
            return read(body)
        except BODY_CUT as exc:
            if attempt >= attempts:
                raise bucket.explain(exc, "s3:GetObject", full_key, attempts=attempt) from exc
        except BotoCoreError as exc:
            raise bucket.explain(exc, "s3:GetObject", full_key) from exc
        finally:
            body.close()
        attempt += 1


def get_object(bucket: Bucket, key: str, max_bytes: int | None) -> bytes:
    """The whole object; see :meth:`Store.get_object`."""
    full = bucket.key(key)
    data: bytes = read_body(bucket, full, lambda: _open(bucket, key, full, max_bytes), _all)
    return data


def get_object_into(
    bucket: Bucket, key: str, sink: Callable[[int, bytes | memoryview], None], max_bytes: int
) -> int:
    """Stream the object to ``sink(position, piece)``; see :meth:`Store.get_object_into`.

    Pieces of :data:`READ_PIECE`: a transfer holds one piece, not a whole chunk (and not the
    two or three copies of it that reading a body at once makes on its way up). A body read
    again starts over: the sink sees position 0 once more.
    """

    def stream(body: Any) -> int:
        direct = _direct(body)
        if direct is not None:
            return _read_direct(*direct, sink, bucket.client.meta.endpoint_url)
        pos = 0
        while piece := body.read(READ_PIECE):
            sink(pos, piece)
            pos += len(piece)
        return pos

    full = bucket.key(key)
    return read_body(bucket, full, lambda: _open(bucket, key, full, max_bytes), stream)


def get_range(bucket: Bucket, key: str, start: int, length: int) -> bytes:
    """One ranged GET (``Range: bytes=a-b``); a range past the end reads as b""."""
    if length <= 0:
        return b""
    full = bucket.key(key)
    wanted = f"bytes={start}-{start + length - 1}"

    def open_range() -> Any:
        try:
            response = bucket.client.get_object(Bucket=bucket.name, Key=full, Range=wanted)
        except ClientError as exc:
            code, status, _ = error_of(exc)
            if code == "NoSuchKey":
                raise ObjectNotFound(key) from None
            if code == "InvalidRange" or status == 416:
                return io.BytesIO()  # shorter than asked: the caller's hash check says so
            raise bucket.explain(exc, "s3:GetObject", full) from exc
        except BotoCoreError as exc:
            raise bucket.explain(exc, "s3:GetObject", full) from exc
        size = response.get("ContentLength")
        if size is None or size > length:  # a server that ignored the Range header
            response["Body"].close()
            raise ObjectTooLarge(key, -1 if size is None else size, length)
        return response["Body"]

    data: bytes = read_body(bucket, full, open_range, _all)
    return data


def _open(bucket: Bucket, key: str, full: str, max_bytes: int | None) -> Any:
    """The body of a GET of ``full``, once its headers say it fits in ``max_bytes``."""
    try:
        response = bucket.client.get_object(Bucket=bucket.name, Key=full)
    except ClientError as exc:
        if error_of(exc)[0] == "NoSuchKey":
            raise ObjectNotFound(key) from None
        raise bucket.explain(exc, "s3:GetObject", full) from exc
    except BotoCoreError as exc:
        raise bucket.explain(exc, "s3:GetObject", full) from exc
    size = response.get("ContentLength")
    if max_bytes is not None and (size is None or size > max_bytes):
        response["Body"].close()  # never read a body bigger than the caller allows
        raise ObjectTooLarge(key, -1 if size is None else size, max_bytes)
    return response["Body"]


def _all(body: Any) -> bytes:
    data: bytes = body.read()
    return data


#: each thread's buffer for :func:`_read_direct`, made at its first streamed GET
_buffers = threading.local()


def _direct(body: Any) -> tuple[HTTPResponse, http.client.HTTPResponse] | None:
    """The urllib3 response under botocore's body, and the http.client one under that,
    where the body can be read from the socket straight into a buffer: a plain body (no
    content coding, a Content-Length) that nothing has read yet. None otherwise, and the
    body is read through botocore as usual.

    botocore's ``StreamingBody._raw_stream`` and urllib3's ``HTTPResponse._fp`` are private,
    so this looks before it uses them. Reading under urllib3 skips nothing it does for such a
    body: it copies each piece through a queue of bytes objects, and botocore checks the
    length read, which :func:`_read_direct` checks itself. Only this module reads the two
    private attributes.
    """
    raw = getattr(body, "_raw_stream", None)
    if not isinstance(raw, HTTPResponse):
        return None
    fp = getattr(raw, "_fp", None)
    if (
        not isinstance(fp, http.client.HTTPResponse)
        or raw.length_remaining is None
        or raw.headers.get("content-encoding")
        or fp.chunked
        or raw.tell() != 0
    ):
        return None
    return raw, fp


def _read_direct(
    raw: HTTPResponse,
    fp: http.client.HTTPResponse,
    sink: Callable[[int, bytes | memoryview], None],
    endpoint_url: str | None,
) -> int:
    """Read the body into this thread's buffer, piece by piece, handing each to ``sink``.

    The piece is a view of the buffer, good until ``sink`` returns. A body cut short raises
    what botocore would have (so :func:`read_body` makes the GET again); the sink's own
    errors pass through untouched. Read to its end, the connection goes back to the pool.
    """
    buf: memoryview | None = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = memoryview(bytearray(READ_PIECE))
    expected = raw.length_remaining or 0
    pos = 0
    while pos < expected:
        try:
            n = fp.readinto(buf)
        except TimeoutError as exc:
            raise ReadTimeoutError(endpoint_url=endpoint_url) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ResponseStreamingError(error=exc) from exc
        if not n:
            raise IncompleteReadError(actual_bytes=pos, expected_bytes=expected)
        sink(pos, buf[:n])
        pos += n
    raw.release_conn()
    return pos
