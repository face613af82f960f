"""botocore's failures as one-line store errors: the object, the IAM action, what to check.

Each error also says whether it may pass (``transient``): throttling, 5xx answers and a
connection or body cut short may; a denied action, a missing bucket or bad credentials
will not, and the agent stops retrying at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from checkpoint.errors import ObjectNotFound, StoreError, StoreUnavailable

#: failures of the connection, not of the request: they may pass
_NETWORK = (BotoConnectionError, HTTPClientError, IncompleteReadError)

_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired"}
_BAD_KEY = {"InvalidAccessKeyId", "InvalidClientTokenId", "InvalidToken"}
_WRONG_REGION = {
    "PermanentRedirect",
    "301",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "AccountProblem"}
NOT_IMPLEMENTED = {"NotImplemented", "501"}
CONDITION_FAILED = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
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


@dataclass(frozen=True)
class Context:
    """What an explanation names besides the error: the bucket, the client's region and
    endpoint, the encryption asked for, and the key prefix to strip from a missing key."""

    bucket: str
    prefix: str
    region: str | None
    endpoint: str
    sse: str | None


def explain(
    exc: Exception, action: str, key: str | None, at: Context, *, attempts: int = 1
) -> StoreError:
    """A one-line error for ``exc``, raised by ``action`` (an IAM action) on ``key``.

    ``key`` is the full object key or prefix; None names the bucket itself. ``attempts``:
    how many times the caller made the request itself (a body cut short, read again).
    """
    where = f"s3://{at.bucket}/{key}" if key else f"s3://{at.bucket}"
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(exc, NoCredentialsError):
        return StoreUnavailable(
            f"{where}: no AWS credentials found (give the job a role, or set "
            "AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return StoreUnavailable(
            f"{where}: cannot reach the S3 endpoint {at.endpoint} ({one_line(str(exc))})",
            transient=True,
        )
    if isinstance(exc, ReadTimeoutError):
        return StoreError(
            f"{where}: {action} timed out waiting for S3{tried}: {one_line(str(exc))}",
            transient=True,
        )
    if not isinstance(exc, ClientError):
        return StoreError(
            f"{where}: {action} failed{tried}: {one_line(str(exc))}",
            transient=isinstance(exc, _NETWORK),  # a reset, a body cut short: not the request
        )
    return _explain_answer(exc, action, key, where, at)


def _explain_answer(
    exc: ClientError, action: str, key: str | None, where: str, at: Context
) -> StoreError:
    """An error S3 answered with (a status and a code)."""
    code, status, message = error_of(exc)
    region = at.region
    if code == "NoSuchBucket" or (code == "404" and key is None):
        return StoreUnavailable(
            f"s3://{at.bucket}: no such bucket (check the name, and that it is in "
            f"{region} or the endpoint you set)"
        )
    if code == "NoSuchKey":
        relative = key[len(at.prefix) + 1 :] if key and at.prefix else key
        return ObjectNotFound(relative or "")
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
                f"s3://{at.bucket}: the bucket is in region {bucket_region}, not {region} "
                f"(set AWS_REGION={bucket_region})"
            )
        return StoreUnavailable(
            f"s3://{at.bucket}: the bucket is not in region {region} ({code}): "
            "set AWS_REGION to the bucket's region"
        )
    if code in _DENIED:
        return StoreUnavailable(
            f"{where}: access denied for {action} (check the IAM policy of the job role)"
        )
    retried = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
    tried = f" after {retried + 1} attempts" if retried else ""
    hint = ""
    if (
        action == "s3:PutObject"
        and at.sse is not None
        and (code in ("InternalError", "NotImplemented", "500", "501"))
    ):
        hint = (
            f" (this S3 service may not support server-side encryption {at.sse}: "
            "ask for none and let the bucket's default apply)"
        )
    return StoreError(
        f"{where}: {action} failed{tried}: {code}: {one_line(message)}{hint}",
        transient=code in _TRANSIENT or status >= 500,
    )


def error_of(exc: ClientError) -> tuple[str, int, str]:
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


def unavailable(error: StoreError) -> StoreUnavailable:
    """``error`` as the :class:`StoreUnavailable` that :meth:`Store.check` raises."""
    if isinstance(error, StoreUnavailable):
        return error
    return StoreUnavailable(str(error), transient=error.transient)


def one_line(text: str) -> str:
    return " ".join(str(text).split())
