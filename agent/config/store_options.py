"""The options of the S3 store and of transfers: shared by ``run`` and the store commands."""

from __future__ import annotations

from .option import Option
from .parsers import (
    ADDRESSING_STYLES,
    parse_bytes_in_flight,
    parse_choice,
    parse_kms_key_id,
    parse_sse,
)

#: How the S3 store talks to the bucket: passed to ``checkpoint.engine.store.base.open_store`` as
#: keyword arguments, never read by ``checkpoint/`` itself.
S3_OPTIONS: tuple[Option, ...] = (
    Option(
        "--sse",
        "SPOT_AGENT_SSE",
        "server-side encryption asked for each object: default (send no header: the "
        "bucket's default encryption applies; on AWS at least SSE-S3), AES256 (SSE-S3), "
        "aws:kms (SSE-KMS, with --sse-kms-key-id or the account's aws/s3 key); see "
        "docs/storage.md",
        parse_sse,
        default="default",
        metavar="MODE",
    ),
    Option(
        "--sse-kms-key-id",
        "SPOT_AGENT_SSE_KMS_KEY_ID",
        "the KMS key (id, ARN or alias/NAME) for --sse aws:kms",
        parse_kms_key_id,
        metavar="KEY",
    ),
    Option(
        "--s3-addressing-style",
        "SPOT_AGENT_S3_ADDRESSING_STYLE",
        "auto (path addressing for an IP or localhost endpoint, else the SDK's choice), "
        "virtual (bucket.host) or path (host/bucket)",
        parse_choice(*ADDRESSING_STYLES),
        default="auto",
        metavar="STYLE",
    ),
)

#: How much memory transfers may take: used by ``run`` and ``checkpoints restore``.
TRANSFER_OPTIONS: tuple[Option, ...] = (
    Option(
        "--max-bytes-in-flight",
        "SPOT_AGENT_MAX_BYTES_IN_FLIGHT",
        "the most chunk bytes that uploads and restores hold in memory at once (binary "
        "units: 32M = 32 MiB; at least 8M, one chunk); more lets more 8 MiB chunks travel "
        "at once, less bounds the agent's memory (about 70 MiB besides)",
        parse_bytes_in_flight,
        default="32M",
        metavar="SIZE",
    ),
)
