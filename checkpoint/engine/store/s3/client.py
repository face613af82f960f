"""The options of an S3 store checked, its URI parsed, and its one botocore client made.

The endpoint, region and credentials come from the SDK's own configuration
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, profiles, the job
role), exactly as in production. Everything else (encryption, addressing style, and
``region``: the agent passes ``AWS_REGION``, which botocore does not read) arrives as
arguments: this package reads no setting of its own from the environment.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import InvalidRegionError, ProfileNotFound
from botocore.loaders import Loader

from checkpoint.errors import StoreURIError

from .explain import one_line

#: None: no header, the bucket's default encryption applies (S3 encrypts every new object
#: with SSE-S3 at least); AES256 (SSE-S3) and aws:kms (SSE-KMS) are explicit choices.
SSE_CHOICES = (None, "AES256", "aws:kms")
ADDRESSING_STYLES = ("auto", "virtual", "path")

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class ClientOptions:
    """How the client talks to S3: timeouts, retries, connections, addressing."""

    #: None: path addressing for an IP or localhost endpoint, else the SDK's choice
    addressing_style: str | None = None
    max_attempts: int = 8
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    #: transfers at once: the connection pool holds at least this many connections
    concurrency: int = 16
    #: None: the SDK's configuration decides (AWS_DEFAULT_REGION, the profile)
    region: str | None = None


def parse_uri(uri: str) -> tuple[str, str]:
    """The bucket and prefix of ``s3://bucket/optional/prefix``; :class:`StoreURIError`."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3":
        raise StoreURIError(f"{uri!r}: not an S3 URI; use s3://bucket/prefix")
    if parts.query or parts.fragment:
        raise StoreURIError(f"{uri!r}: an S3 URI has no '?' or '#' part")
    check_bucket_name(parts.netloc, uri)
    return parts.netloc, parts.path


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


def check_encryption(sse: str | None, kms_key_id: str | None) -> str | None:
    """``sse`` checked against ``kms_key_id`` (ValueError), "none" read as None."""
    if sse == "none":  # the old spelling of "no header"
        sse = None
    if sse not in SSE_CHOICES:
        raise ValueError(f"sse must be None, AES256 or aws:kms, not {sse!r}")
    if kms_key_id and sse != "aws:kms":
        raise ValueError(f"a KMS key id is only used with sse='aws:kms', not {sse!r}")
    return sse


def make_client(options: ClientOptions) -> Any:
    """A botocore S3 client; ValueError for a bad addressing style, :class:`StoreURIError`
    when the SDK's own configuration (a profile, a region, an endpoint) cannot make one."""
    style = options.addressing_style
    if style is not None and style not in ADDRESSING_STYLES:
        raise ValueError(
            f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}, not {style!r}"
        )
    try:
        return _new_client(options, None if style == "auto" else style)
    except (ProfileNotFound, InvalidRegionError, ValueError) as exc:
        # one line, not a traceback
        raise StoreURIError(one_line(str(exc)), setting="AWS SDK configuration") from None


#: botocore's data loader, shared by the sessions of one process: each new session would
#: parse S3's service model and endpoint rules again (about 50 ms of JSON), and the agent
#: opens a store twice before its job starts (the claim's, with start-up's timeouts, and
#: the run's). The sessions stay apart: each resolves its own credentials and settings.
_loader: Loader | None = None


def _session() -> botocore.session.Session:
    global _loader
    session = botocore.session.get_session()
    if _loader is None:
        _loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _loader)
    return session


def _new_client(options: ClientOptions, addressing_style: str | None) -> Any:
    # botocore's own session, as boto3's makes it, without boto3's resources and transfer
    # manager (s3transfer, multiprocessing): fewer imports before a job starts.
    session = _session()
    if options.region is not None:
        session.set_config_variable("region", options.region)
    s3_options: dict[str, Any] = {
        # Every body we send carries its own SHA-256 (ChecksumSHA256, a signed header
        # that S3 verifies), so SigV4 hashing the same bytes again only burns CPU:
        # measured in bench/, -25% CPU on a 1 GiB upload.
        "payload_signing_enabled": False,
    }
    config = Config(
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        max_pool_connections=max(options.concurrency, 10),
        # standard mode retries throttling (SlowDown, 503) and 5xx with backoff
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},
        # Restore hashes every chunk against the manifest itself; botocore checking
        # the stored checksum as well would hash each byte twice.
        response_checksum_validation="when_required",
        s3=s3_options,
    )
    client = session.create_client("s3", config=config)
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
    return session.create_client("s3", config=config.merge(Config(s3=s3_options)))


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
