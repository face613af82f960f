"""PUTs: an object replaced, and an object created only if absent (the commit's primitive).

Every body carries its SHA-256 (``ChecksumSHA256``, a signed header): S3 recomputes it and
refuses the object (BadDigest) if a byte changed on the way. A create-only PUT sends
``If-None-Match: *``; a service without conditional writes is named as such, since the
commit protocol cannot work without them.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from checkpoint.errors import ConditionalWritesUnsupported

from .bucket import Bucket
from .explain import CONDITION_FAILED, NOT_IMPLEMENTED, error_of


def put_object(bucket: Bucket, key: str, data: bytes, sha256: str | None) -> None:
    """Create or replace ``key``; ``sha256`` (hex), when given, is sent for S3 to check."""
    args: dict[str, Any] = {"Bucket": bucket.name, "Key": bucket.key(key), "Body": data}
    args.update(bucket.sse_args())
    if sha256 is not None:
        args["ChecksumSHA256"] = _base64(bytes.fromhex(sha256))
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


def _base64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")
