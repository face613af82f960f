"""Listing, existence, batched deletes and the check that the bucket can be used."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from botocore.exceptions import BotoCoreError, ClientError

from checkpoint.errors import StoreError

from ..base import ObjectInfo
from .bucket import Bucket
from .explain import error_of, one_line, unavailable

DELETE_BATCH = 1000  # the most keys one DeleteObjects request accepts


def exists(bucket: Bucket, key: str) -> bool:
    full = bucket.key(key)
    try:
        bucket.client.head_object(Bucket=bucket.name, Key=full)
    except ClientError as exc:
        if error_of(exc)[0] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise bucket.explain(exc, "s3:GetObject", full) from exc
    except BotoCoreError as exc:
        raise bucket.explain(exc, "s3:GetObject", full) from exc
    return True


def list_objects(bucket: Bucket, prefix: str) -> Iterator[ObjectInfo]:
    """Every object under ``prefix`` (a store key prefix, not a directory: no '/' added)."""
    full = f"{bucket.prefix}/{prefix}" if bucket.prefix else prefix
    paginator = bucket.client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket.name, Prefix=full):
            for item in page.get("Contents", ()):
                yield ObjectInfo(bucket.relative(item["Key"]), item["Size"], item["LastModified"])
    except (ClientError, BotoCoreError) as exc:
        raise bucket.explain(exc, "s3:ListBucket", full or None) from exc


def delete_objects(bucket: Bucket, uri: str, keys: Iterable[str]) -> None:
    """Delete in batches of :data:`DELETE_BATCH`; one error names the keys S3 refused."""
    failed: list[str] = []
    total = 0
    batch: list[dict[str, str]] = []
    for key in keys:
        batch.append({"Key": bucket.key(key)})
        total += 1
        if len(batch) == DELETE_BATCH:
            failed += _delete_batch(bucket, batch)
            batch = []
    if batch:
        failed += _delete_batch(bucket, batch)
    if failed:
        shown = "; ".join(failed[:3]) + ("; ..." if len(failed) > 3 else "")
        raise StoreError(f"{uri}: could not delete {len(failed)} of {total} objects: {shown}")


def _delete_batch(bucket: Bucket, batch: list[dict[str, str]]) -> list[str]:
    try:
        response = bucket.client.delete_objects(
            Bucket=bucket.name, Delete={"Objects": batch, "Quiet": True}
        )
    except (ClientError, BotoCoreError) as exc:
        raise bucket.explain(exc, "s3:DeleteObject", batch[0]["Key"]) from exc
    return [
        f"{bucket.relative(error.get('Key', '?'))} ({error.get('Code')}: "
        f"{one_line(error.get('Message', ''))})"
        for error in response.get("Errors", ())
    ]


def check(bucket: Bucket) -> None:
    """Raise :class:`StoreUnavailable` unless the bucket answers and its prefix can be listed."""
    try:
        bucket.client.head_bucket(Bucket=bucket.name)
    except ClientError as head_exc:
        # HEAD answers carry no body, so the error code is only the status ("403").
        # A ListObjectsV2 tells which 403 it is (access denied, bad key, bad signature).
        error = bucket.explain(head_exc, "s3:ListBucket", None)
        if error_of(head_exc)[0] in ("400", "403"):
            try:
                _list_one(bucket)
            except (ClientError, BotoCoreError) as list_exc:
                error = bucket.explain(list_exc, "s3:ListBucket", bucket.prefix or None)
        raise unavailable(error) from head_exc
    except BotoCoreError as exc:
        raise unavailable(bucket.explain(exc, "s3:ListBucket", None)) from exc
    try:
        _list_one(bucket)
    except (ClientError, BotoCoreError) as exc:
        raise unavailable(bucket.explain(exc, "s3:ListBucket", bucket.prefix or None)) from exc


def _list_one(bucket: Bucket) -> None:
    bucket.client.list_objects_v2(
        Bucket=bucket.name, Prefix=f"{bucket.prefix}/" if bucket.prefix else "", MaxKeys=1
    )
