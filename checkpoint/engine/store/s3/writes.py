"""PUTs: an object replaced, and an object created only if absent (the commit's primitive).

Every body carries a checksum in a signed header, which S3 recomputes, refusing the object
(BadDigest) if a byte changed on the way: its SHA-256 (``ChecksumSHA256``) where the caller
knows it already (a page, a sha256-named object: no byte hashed twice), else its CRC-32
(``ChecksumCRC32``, zlib: about 5 GiB per CPU-second here, where sha256 is about 1.7), as
for the objects named by BLAKE3, which S3 has no checksum for. (Over plain HTTP, as against
a local server, SigV4 also hashes the body with sha256; over HTTPS the body is not signed.)
A create-only PUT sends ``If-None-Match: *``; a service without conditional writes is named
as such, since the commit protocol cannot work without them.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from checkpoint.errors import ConditionalWritesUnsupported

from .bucket import Bucket
from .explain import CONDITION_FAILED, NOT_IMPLEMENTED, error_of


def put_object(bucket: Bucket, key: str, data: bytes, sha256: str | None) -> None:
    """Create or replace ``key``; ``sha256`` (hex), when given, is sent for S3 to check,
    else a CRC-32 of ``data``."""
    args: dict[str, Any] = {"Bucket": bucket.name, "Key": bucket.key(key), "Body": data}
    args.update(bucket.sse_args())
    if sha256 is not None:
        args["ChecksumSHA256"] = _base64(bytes.fromhex(sha256))
    else:
        args["ChecksumCRC32"] = crc32_header(data)
    try:
        bucket.client.put_object(**args)
    except (ClientError, BotoCoreError) as exc:
        raise bucket.explain(exc, "s3:PutObject", args["Key"]) from exc


def put_object_if_absent(bucket: Bucket, key: str, data: bytes) -> bool:
    """Create ``key`` only if no object is there; False when one already was."""
    full = bucket.key(key)
    args: dict[str, Any] = {
        "Bucket": bucket.name,
        "Key": full,
        "Body": data,
        "IfNoneMatch": "*",
        "ChecksumSHA256": _base64(hashlib.sha256(data).digest()),
    }
    args.update(bucket.sse_args())
    try:
        bucket.client.put_object(**args)
    except ClientError as exc:
        code, status, message = error_of(exc)
        if code in CONDITION_FAILED or status in (409, 412):
            return False
        if (
            code in NOT_IMPLEMENTED
            or status == 501
            or (code == "InvalidArgument" and "match" in message.lower())
        ):
            raise ConditionalWritesUnsupported(
                f"s3://{bucket.name}/{full}: this S3 service does not support conditional "
                f"writes (If-None-Match: *): {code}: {message}"
            ) from exc
        raise bucket.explain(exc, "s3:PutObject", full) from exc
    except BotoCoreError as exc:
        raise bucket.explain(exc, "s3:PutObject", full) from exc
    return True


def crc32_header(data: bytes) -> str:
    """``ChecksumCRC32``: the big-endian CRC-32 of ``data``, base64."""
    return _base64(zlib.crc32(data).to_bytes(4, "big"))


def _base64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")
