"""The boto3 Batch client both halves use: the SDK's own environment, short timeouts."""

from __future__ import annotations

from typing import Any


def batch_client(region: str | None = None) -> Any:
    """A Batch client from the SDK's environment (``region``: AWS_REGION, which botocore
    does not read), with short timeouts: it runs at shutdown."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=3,
        read_timeout=10,
        retries={"mode": "standard", "total_max_attempts": 3},
    )
    return boto3.session.Session(region_name=region).client("batch", config=config)
