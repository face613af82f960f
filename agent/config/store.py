"""The store's settings: where checkpoints live and how the S3 store talks to the bucket;
what ``run`` and the store commands (``checkpoints``, ``doctor``) share."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from checkpoint.engine.budget import DEFAULT_MAX_BYTES_IN_FLIGHT

from .aws_environment import check_aws_environment, sdk_region, uses_aws
from .option import resolve, state_home
from .options import RUN_OPTIONS, S3_OPTIONS
from .parsers import ConfigError


@dataclass(frozen=True)
class S3Settings:
    """How the S3 store is used; :meth:`store_options` is what ``open_store`` takes."""

    sse: str = "default"
    kms_key_id: str | None = None
    addressing_style: str = "auto"
    #: AWS_REGION, for every AWS client of the agent (None: botocore's own order goes on)
    aws_region: str | None = None
    #: where the region comes from: AWS_REGION, AWS_DEFAULT_REGION or the profile's config
    aws_region_source: str = "the profile's config"

    def store_options(self) -> dict[str, str | None]:
        return {
            "region": self.aws_region,
            "sse": None if self.sse == "default" else self.sse,
            "kms_key_id": self.kms_key_id,
            "addressing_style": None if self.addressing_style == "auto" else self.addressing_style,
        }


def load_s3_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> S3Settings:
    """The S3 options, checked together: a KMS key id is only used with aws:kms."""
    values = {o.dest: resolve(o, args, environ) for o in S3_OPTIONS}
    sse, key = values["sse"], values["sse_kms_key_id"]
    if key and sse != "aws:kms":
        raise ConfigError(
            S3_OPTIONS[1].setting,
            f"a KMS key id is only used with --sse aws:kms (SPOT_AGENT_SSE=aws:kms), and "
            f"the encryption asked for is {sse!r}: set both, or neither",
        )
    region, source = sdk_region(environ)
    return S3Settings(
        sse=sse,
        kms_key_id=key,
        addressing_style=values["s3_addressing_style"],
        aws_region=region,
        aws_region_source=source,
    )


@dataclass(frozen=True)
class StoreSettings:
    checkpoint_uri: str
    job_id: str | None
    s3: S3Settings = S3Settings()
    max_bytes_in_flight: int = DEFAULT_MAX_BYTES_IN_FLIGHT  # --max-bytes-in-flight


def default_store_uri(environ: Mapping[str, str]) -> str:
    return (state_home(environ) / "store").as_uri()


def load_store_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> StoreSettings:
    opts = {o.flag: o for o in RUN_OPTIONS}
    uri = resolve(opts["--checkpoint-uri"], args, environ) or default_store_uri(environ)
    job_id = resolve(opts["--job-id"], args, environ) or environ.get("AWS_BATCH_JOB_ID") or None
    s3 = load_s3_settings(args, environ)
    if uses_aws(uri):
        check_aws_environment(environ)
    in_flight = resolve(opts["--max-bytes-in-flight"], args, environ)
    return StoreSettings(uri, job_id, s3, max_bytes_in_flight=in_flight)
