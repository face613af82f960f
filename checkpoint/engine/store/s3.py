"""The checkpoint store on Amazon S3 (or any S3-compatible service): ``s3://bucket/prefix``.

One boto3 client is shared by all threads (botocore clients are thread-safe); its connection
pool is sized for :attr:`S3Store.concurrency` transfers at once. The endpoint, region and
credentials come from the SDK's own configuration (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, profiles, the job role), exactly as in production.
Everything else (encryption, addressing style, and ``region``: the agent passes
``AWS_REGION``, which botocore does not read) arrives as arguments: this package reads no
setting of its own from the environment.

Every failure goes through :meth:`S3Store._explain`, which turns it into a one-line
:class:`StoreError` naming the object, the IAM action and what to check.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    InvalidRegionError,
    NoCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from checkpoint.errors import (
    ConditionalWritesUnsupported,
    ObjectNotFound,
    ObjectTooLarge,
    StoreError,
    StoreUnavailable,
    StoreURIError,
)

from .base import ObjectInfo, Store

__all__ = ["ConditionalWritesUnsupported", "S3Store"]

#: None: no header, the bucket's default encryption applies (S3 encrypts every new object
#: with SSE-S3 at least); AES256 (SSE-S3) and aws:kms (SSE-KMS) are explicit choices.
SSE_CHOICES = (None, "AES256", "aws:kms")
ADDRESSING_STYLES = ("auto", "virtual", "path")
DELETE_BATCH = 1000  # the most keys one DeleteObjects request accepts
#: A GET whose body is cut short (connection reset or timeout mid-body) is made again this
#: many times in all; botocore's own retries end when the response headers arrive.
BODY_READ_ATTEMPTS = 4
#: The piece a streamed GET reads at a time (see :meth:`S3Store.get_object_into`).
READ_PIECE = 1 << 20
_BODY_CUT = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError)
#: failures of the connection, not of the request: they may pass
_NETWORK = (BotoConnectionError, HTTPClientError, IncompleteReadError)

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")

_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired"}
_BAD_KEY = {"InvalidAccessKeyId", "InvalidClientTokenId", "InvalidToken"}
_WRONG_REGION = {
    "PermanentRedirect",
    "301",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"}
_NOT_IMPLEMENTED = {"NotImplemented", "501"}
_CONDITION_FAILED = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
#: answers that may differ a little later (besides any 5xx status)
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


def check_bucket_name(bucket: str, uri: str) -> None:
    """Raise :class:`StoreURIError` unless ``bucket`` follows the S3 bucket naming rules."""
    if not bucket:
        raise StoreURIError(f"{uri!r}: no bucket name; use s3://bucket/prefix")
    problem = None
    if not 3 <= len(bucket) <= 63:
        problem = "must be 3 to 63 characters long"
    elif bucket != bucket.lower():
        problem = "must be lower case"
    elif not _BUCKET_NAME.match(bucket):
        problem = (
            "may hold only lower-case letters, digits, '.' and '-', "
            "and must begin and end with a letter or digit"
        )
    elif ".." in bucket or ".-" in bucket or "-." in bucket:
        problem = "must not have '..', '.-' or '-.'"
    elif _IP_LIKE.match(bucket):
        problem = "must not look like an IP address"
    if problem:
        raise StoreURIError(f"{uri!r}: bad bucket name {bucket!r}: a bucket name {problem}")


def _is_local_host(endpoint_url: str | None) -> bool:
    host = urlsplit(endpoint_url).hostname if endpoint_url else None
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``; keys are relative to the prefix."""

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
        if sse == "none":  # the old spelling of "no header"
            sse = None
        if sse not in SSE_CHOICES:
            raise ValueError(f"sse must be None, AES256 or aws:kms, not {sse!r}")
        if kms_key_id and sse != "aws:kms":
            raise ValueError(f"a KMS key id is only used with sse='aws:kms', not {sse!r}")
        if addressing_style is not None and addressing_style not in ADDRESSING_STYLES:
            raise ValueError(
                f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}, "
                f"not {addressing_style!r}"
            )
        if addressing_style == "auto":
            addressing_style = None  # decided in _make_client
        self.bucket = bucket
        self.prefix = "/".join(part for part in prefix.split("/") if part)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.concurrency = concurrency
        self.sse = sse
        self.kms_key_id = kms_key_id
        #: the region for the client it makes; None: the SDK's configuration decides
        self.region = region
        self._owns_client = client is None
        self.client: Any = (
            client
            if client is not None
            else self._make_client(addressing_style, max_attempts, connect_timeout, read_timeout)
        )

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        sse: str | None = None,
        kms_key_id: str | None = None,
        addressing_style: str | None = None,
        **kwargs: Any,
    ) -> S3Store:
        """The store ``s3://bucket/optional/prefix`` names.

        ``sse``: None sends no encryption header (the bucket's default applies), or
        ``AES256`` / ``aws:kms`` (with ``kms_key_id``, else the account's aws/s3 key).
        ``addressing_style``: None (path for an IP or localhost endpoint, else the SDK's
        choice), ``virtual`` or ``path``. The endpoint, region and credentials come from the
        SDK's own configuration. Raises :class:`StoreURIError` for a bad URI, ValueError
        for a bad option.
        """
        parts = urlsplit(uri)
        if parts.scheme.lower() != "s3":
            raise StoreURIError(f"{uri!r}: not an S3 URI; use s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise StoreURIError(f"{uri!r}: an S3 URI has no '?' or '#' part")
        bucket = parts.netloc
        check_bucket_name(bucket, uri)
        return cls(
            bucket,
            parts.path,
            sse=sse,
            kms_key_id=kms_key_id,
            addressing_style=addressing_style,
            **kwargs,
        )

    def _make_client(
        self,
        addressing_style: str | None,
        max_attempts: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> Any:
        try:
            return self._new_client(addressing_style, max_attempts, connect_timeout, read_timeout)
        except (ProfileNotFound, InvalidRegionError, ValueError) as exc:
            # The SDK's own configuration (a profile, a region or an endpoint in a config
            # file) cannot make a client: one line, not a traceback.
            raise StoreURIError(_one_line(str(exc)), setting="AWS SDK configuration") from None

    def _new_client(
        self,
        addressing_style: str | None,
        max_attempts: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> Any:
        # None: the SDK's own configuration decides (AWS_DEFAULT_REGION, the profile)
        session = boto3.session.Session(region_name=self.region)
        s3_options: dict[str, Any] = {
            # Every body we send carries its own SHA-256 (ChecksumSHA256, a signed header
            # that S3 verifies), so SigV4 hashing the same bytes again only burns CPU:
            # measured in bench/, -25% CPU on a 1 GiB upload.
            "payload_signing_enabled": False,
        }
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max(self.concurrency, 10),
            # standard mode retries throttling (SlowDown, 503) and 5xx with backoff
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            # Restore hashes every chunk against the manifest itself; botocore checking
            # the stored checksum as well would hash each byte twice.
            response_checksum_validation="when_required",
            s3=s3_options,
        )
        client = session.client("s3", config=config)
        if addressing_style is None and _is_local_host(client.meta.endpoint_url):
            # The endpoint came from AWS_ENDPOINT_URL(_S3) and names an IP or localhost
            # (SeaweedFS, MinIO, moto): a host name "bucket.127.0.0.1" cannot resolve, so
            # bucket-in-host (virtual) addressing cannot work there. Use path addressing.
            addressing_style = "path"
        if addressing_style is None:
            return client
        client.close()
        # Config.merge replaces the whole s3 dict: carry the options over.
        s3_options = {**s3_options, "addressing_style": addressing_style}
        return session.client("s3", config=config.merge(Config(s3=s3_options)))

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- keys

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _sse_args(self) -> dict[str, str]:
        if self.sse is None:
            return {}
        args = {"ServerSideEncryption": self.sse}
        if self.sse == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    # -- the Store interface

    def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        args.update(self._sse_args())
        if sha256 is not None:
            # S3 recomputes the digest and refuses the object (BadDigest) if it differs.
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        try:
            self.client.put_object(**args)
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, "s3:PutObject", args["Key"]) from exc

    def put_object_if_absent(self, key: str, data: bytes) -> bool:
        full = self._key(key)
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": full,
            "Body": data,
            "IfNoneMatch": "*",
            "ChecksumSHA256": base64.b64encode(hashlib.sha256(data).digest()).decode("ascii"),
        }
        args.update(self._sse_args())
        try:
            self.client.put_object(**args)
        except ClientError as exc:
            code, status, message = _error_of(exc)
            if code in _CONDITION_FAILED or status in (409, 412):
                return False
            if (
                code in _NOT_IMPLEMENTED
                or status == 501
                or (code == "InvalidArgument" and "match" in message.lower())
            ):
                raise ConditionalWritesUnsupported(
                    f"s3://{self.bucket}/{full}: this S3 service does not support conditional "
                    f"writes (If-None-Match: *): {code}: {message}"
                ) from exc
            raise self._explain(exc, "s3:PutObject", full) from exc
        except BotoCoreError as exc:
            raise self._explain(exc, "s3:PutObject", full) from exc
        return True

    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        full = self._key(key)
        for attempt in range(1, BODY_READ_ATTEMPTS + 1):
            body = self._open_body(key, full, max_bytes)
            try:
                data: bytes = body.read()
            except _BODY_CUT as exc:
                # botocore retries a request until its headers arrive, never a body cut
                # short after them: that one network retry is ours to make.
                if attempt < BODY_READ_ATTEMPTS:
                    continue
                raise self._explain(exc, "s3:GetObject", full) from exc
            except BotoCoreError as exc:
                raise self._explain(exc, "s3:GetObject", full) from exc
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def get_object_into(
        self, key: str, sink: Callable[[int, bytes], None], *, max_bytes: int
    ) -> int:
        # Pieces of READ_PIECE: a transfer holds one piece, not a whole chunk (and not the
        # two or three copies of it that reading a body at once makes on its way up).
        full = self._key(key)
        for attempt in range(1, BODY_READ_ATTEMPTS + 1):
            body = self._open_body(key, full, max_bytes)
            pos = 0
            try:
                while piece := body.read(READ_PIECE):
                    sink(pos, piece)
                    pos += len(piece)
            except _BODY_CUT as exc:
                if attempt < BODY_READ_ATTEMPTS:
                    continue  # made again from the start: the sink sees position 0 again
                raise self._explain(exc, "s3:GetObject", full) from exc
            except BotoCoreError as exc:
                raise self._explain(exc, "s3:GetObject", full) from exc
            finally:
                body.close()  # a body left unread (the sink failed) drops its connection
            return pos
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_body(self, key: str, full: str, max_bytes: int | None) -> Any:
        """The body of a GET of ``full``, once its headers say it fits in ``max_bytes``."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _error_of(exc)[0] == "NoSuchKey":
                raise ObjectNotFound(key) from None
            raise self._explain(exc, "s3:GetObject", full) from exc
        except BotoCoreError as exc:
            raise self._explain(exc, "s3:GetObject", full) from exc
        size = response.get("ContentLength")
        if max_bytes is not None and (size is None or size > max_bytes):
            response["Body"].close()  # never read a body bigger than the caller allows
            raise ObjectTooLarge(key, -1 if size is None else size, max_bytes)
        return response["Body"]

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _error_of(exc)[0] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._explain(exc, "s3:GetObject", full) from exc
        except BotoCoreError as exc:
            raise self._explain(exc, "s3:GetObject", full) from exc
        return True

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        self._relative(item["Key"]), item["Size"], item["LastModified"]
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, "s3:ListBucket", full or None) from exc

    def delete_objects(self, keys: Iterable[str]) -> None:
        failed: list[str] = []
        total = 0
        batch: list[dict[str, str]] = []
        for key in keys:
            batch.append({"Key": self._key(key)})
            total += 1
            if len(batch) == DELETE_BATCH:
                failed += self._delete_batch(batch)
                batch = []
        if batch:
            failed += self._delete_batch(batch)
        if failed:
            shown = "; ".join(failed[:3]) + ("; ..." if len(failed) > 3 else "")
            raise StoreError(
                f"{self.uri}: could not delete {len(failed)} of {total} objects: {shown}"
            )

    def _delete_batch(self, batch: list[dict[str, str]]) -> list[str]:
        try:
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, "s3:DeleteObject", batch[0]["Key"]) from exc
        return [
            f"{self._relative(error.get('Key', '?'))} ({error.get('Code')}: "
            f"{_one_line(error.get('Message', ''))})"
            for error in response.get("Errors", ())
        ]

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as head_exc:
            # HEAD answers carry no body, so the error code is only the status ("403").
            # A ListObjectsV2 tells which 403 it is (access denied, bad key, bad signature).
            error = self._explain(head_exc, "s3:ListBucket", None)
            if _error_of(head_exc)[0] in ("400", "403"):
                try:
                    self._list_one()
                except (ClientError, BotoCoreError) as list_exc:
                    error = self._explain(list_exc, "s3:ListBucket", self.prefix or None)
            raise _unavailable(error) from head_exc
        except BotoCoreError as exc:
            raise _unavailable(self._explain(exc, "s3:ListBucket", None)) from exc
        try:
            self._list_one()
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(self._explain(exc, "s3:ListBucket", self.prefix or None)) from exc

    def _list_one(self) -> None:
        self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1
        )

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """One ranged GET (``Range: bytes=a-b``); a range past the end reads as b""."""
        if length <= 0:
            return b""
        full = self._key(key)
        wanted = f"bytes={start}-{start + length - 1}"
        for attempt in range(1, BODY_READ_ATTEMPTS + 1):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=full, Range=wanted)
            except ClientError as exc:
                code, status, _ = _error_of(exc)
                if code == "NoSuchKey":
                    raise ObjectNotFound(key) from None
                if code == "InvalidRange" or status == 416:
                    return b""  # the object is shorter than asked: the hash check says so
                raise self._explain(exc, "s3:GetObject", full) from exc
            except BotoCoreError as exc:
                raise self._explain(exc, "s3:GetObject", full) from exc
            size = response.get("ContentLength")
            if size is None or size > length:  # a server that ignored the Range header
                response["Body"].close()
                raise ObjectTooLarge(key, -1 if size is None else size, length)
            try:
                body: bytes = response["Body"].read()
            except _BODY_CUT as exc:
                if attempt < BODY_READ_ATTEMPTS:
                    continue
                raise self._explain(exc, "s3:GetObject", full) from exc
            except BotoCoreError as exc:
                raise self._explain(exc, "s3:GetObject", full) from exc
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    # -- errors

    def _explain(self, exc: Exception, action: str, key: str | None) -> StoreError:
        """A one-line error for ``exc``, raised by ``action`` (an IAM action) on ``key``.

        ``key`` is the full object key or prefix; None names the bucket itself.
        """
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        if isinstance(exc, NoCredentialsError):
            return StoreUnavailable(
                f"{where}: no AWS credentials found (give the job a role, or set "
                "AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
            return StoreUnavailable(
                f"{where}: cannot reach the S3 endpoint {self.client.meta.endpoint_url} "
                f"({_one_line(str(exc))})",
                transient=True,
            )
        if isinstance(exc, ReadTimeoutError):
            return StoreError(
                f"{where}: {action} timed out waiting for S3: {_one_line(str(exc))}",
                transient=True,
            )
        if not isinstance(exc, ClientError):
            return StoreError(
                f"{where}: {action} failed: {_one_line(str(exc))}",
                transient=isinstance(exc, _NETWORK),  # a reset, a body cut short: not the request
            )

        code, status, message = _error_of(exc)
        region = self.client.meta.region_name
        if code == "NoSuchBucket" or (code == "404" and key is None):
            return StoreUnavailable(
                f"s3://{self.bucket}: no such bucket (check the name, and that it is in "
                f"{region} or the endpoint you set)"
            )
        if code == "NoSuchKey":
            return ObjectNotFound(self._relative(key) if key else "")
        if code in _EXPIRED:
            return StoreUnavailable(
                f"{where}: the AWS credentials have expired ({code}): renew the session or "
                "check the job role"
            )
        if code in _BAD_KEY:
            return StoreUnavailable(
                f"{where}: the AWS access key or session token is not valid ({code}): check "
                "AWS_ACCESS_KEY_ID, AWS_SESSION_TOKEN or the profile"
            )
        if code == "SignatureDoesNotMatch":
            return StoreUnavailable(
                f"{where}: the request signature does not match (SignatureDoesNotMatch): "
                "check the secret access key"
            )
        if code in _WRONG_REGION or status == 301:
            bucket_region = _bucket_region(exc)
            if bucket_region and bucket_region != region:
                return StoreUnavailable(
                    f"s3://{self.bucket}: the bucket is in region {bucket_region}, not {region} "
                    f"(set AWS_REGION={bucket_region})"
                )
            return StoreUnavailable(
                f"s3://{self.bucket}: the bucket is not in region {region} ({code}): "
                "set AWS_REGION to the bucket's region"
            )
        if code in _DENIED:
            return StoreUnavailable(
                f"{where}: access denied for {action} (check the IAM policy of the job role)"
            )
        attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
        tried = f" after {attempts + 1} attempts" if attempts else ""
        hint = ""
        if (
            action == "s3:PutObject"
            and self.sse is not None
            and (code in ("InternalError", "NotImplemented", "500", "501"))
        ):
            hint = (
                f" (this S3 service may not support server-side encryption {self.sse}: "
                "ask for none and let the bucket's default apply)"
            )
        return StoreError(
            f"{where}: {action} failed{tried}: {code}: {_one_line(message)}{hint}",
            transient=code in _TRANSIENT or status >= 500,
        )


def _error_of(exc: ClientError) -> tuple[str, int, str]:
    """The error code, HTTP status and message of a ClientError."""
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status or "Unknown")
    return code, status, str(error.get("Message") or "")


def _bucket_region(exc: ClientError) -> str | None:
    """The region S3 says the bucket is in, when the error response tells."""
    region = exc.response.get("Error", {}).get("Region")
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return str(region or headers.get("x-amz-bucket-region") or "") or None


def _unavailable(error: StoreError) -> StoreUnavailable:
    if isinstance(error, StoreUnavailable):
        return error
    return StoreUnavailable(str(error), transient=error.transient)
