"""The :class:`Store` on S3: the interface, each call handed to the module that owns it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..base import ObjectInfo, Store
from . import listing, reads, writes
from .bucket import Bucket
from .client import ClientOptions, check_encryption, make_client, parse_uri


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``; keys are relative to the prefix.

    ``sse``: None sends no encryption header (the bucket's default applies), or ``AES256``
    / ``aws:kms`` (with ``kms_key_id``, else the account's aws/s3 key).
    ``addressing_style``: None or ``auto`` (path for an IP or localhost endpoint, else the
    SDK's choice), ``virtual`` or ``path``. ``client``: a botocore S3 client to use instead
    of making one (the store then leaves it open). ValueError for a bad option.
    """

    stream_piece = reads.READ_PIECE

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        concurrency: int = 16,
        sse: str | None = None,
        kms_key_id: str | None = None,
        addressing_style: str | None = None,
        max_attempts: int = 8,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        region: str | None = None,
    ) -> None:
        sse = check_encryption(sse, kms_key_id)
        prefix = "/".join(part for part in prefix.split("/") if part)
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.concurrency = concurrency
        #: the region for the client it makes; None: the SDK's configuration decides
        self.region = region
        self._owns_client = client is None
        if client is None:
            client = make_client(
                ClientOptions(
                    addressing_style,
                    max_attempts,
                    connect_timeout,
                    read_timeout,
                    concurrency,
                    region,
                )
            )
        self.objects = Bucket(client, bucket, prefix, sse, kms_key_id)

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> S3Store:
        """The store ``s3://bucket/optional/prefix`` names, with the options of the class.

        Raises :class:`StoreURIError` for a bad URI, ValueError for a bad option.
        """
        bucket, prefix = parse_uri(uri)
        return cls(bucket, prefix, **kwargs)

    @property
    def client(self) -> Any:
        return self.objects.client

    @property
    def bucket(self) -> str:
        return self.objects.name

    @property
    def prefix(self) -> str:
        return self.objects.prefix

    @property
    def sse(self) -> str | None:
        return self.objects.sse

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        writes.put_object(self.objects, key, data, sha256)

    def put_object_if_absent(self, key: str, data: bytes) -> bool:
        return writes.put_object_if_absent(self.objects, key, data)

    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return reads.get_object(self.objects, key, max_bytes)

    def get_object_into(
        self, key: str, sink: Callable[[int, bytes | memoryview], None], *, max_bytes: int
    ) -> int:
        return reads.get_object_into(self.objects, key, sink, max_bytes)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return reads.get_range(self.objects, key, start, length)

    def exists(self, key: str) -> bool:
        return listing.exists(self.objects, key)

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        return listing.list_objects(self.objects, prefix)

    def delete_objects(self, keys: Iterable[str]) -> None:
        listing.delete_objects(self.objects, self.uri, keys)

    def check(self) -> None:
        listing.check(self.objects)
