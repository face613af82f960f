"""Where the EC2 metadata service is, by the SDKs' own variables and rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .parsers import ConfigError, parse_switch

_IMDS_ENDPOINTS = {"ipv4": "http://169.254.169.254", "ipv6": "http://[fd00:ec2::254]"}


def imds_endpoint(environ: Mapping[str, str]) -> str:
    """The SDKs' rules: an explicit endpoint wins, else the endpoint mode picks IPv4 or IPv6."""
    mode = environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "").strip().lower() or "ipv4"
    if mode not in _IMDS_ENDPOINTS:
        raise ConfigError(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
            f"expected IPv4 or IPv6, got {environ['AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE']!r}",
        )
    raw = environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or _IMDS_ENDPOINTS[mode]
    if not re.match(r"https?://[^/\s]+/?\Z", raw):
        raise ConfigError(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            f"expected a URL like http://169.254.169.254 or http://127.0.0.1:1338, got {raw!r}",
        )
    return raw.rstrip("/")


def imds_v1(values: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    if values["imds_v1"]:
        return str(values["imds_v1"])
    try:  # botocore's own switch: its IMDSv1 fallback is off, so is ours
        v1_disabled = parse_switch(environ.get("AWS_EC2_METADATA_V1_DISABLED", ""))
    except ValueError as exc:
        raise ConfigError("AWS_EC2_METADATA_V1_DISABLED", str(exc)) from None
    return "forbid" if v1_disabled else "allow"


def imds_disabled(environ: Mapping[str, str]) -> bool:
    # botocore: only the word "true" (any case) turns it off; anything else leaves it on.
    return environ.get("AWS_EC2_METADATA_DISABLED", "false").strip().lower() == "true"
