"""Settings: read once, from options and the environment, validated into one frozen object.

Every option of ``spot-agent run`` also reads an environment variable, so a container is
configured without changing its command. The precedence is: option, environment, default.
This is the only part of the agent that reads the environment (the AWS SDK's own
variables are checked by :mod:`agent.config.aws_environment`, on the mapping given here).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from checkpoint.engine.budget import DEFAULT_MAX_BYTES_IN_FLIGHT

from ..process.signals import DEFAULT_SYNC_SIGNAL, Sig
from .aws_environment import check_aws_environment, uses_aws
from .continuation import (
    ARRAY_INDEX_CARRIED,
    BECAUSE_BUDGET,
    BECAUSE_LAST_ATTEMPT,
    CONTINUED_BECAUSE,
    CONTINUES_FROM,
    child_environ,
    fallback_after,
)
from .group import GroupSettings, load_group_settings
from .imds import imds_disabled, imds_endpoint, imds_v1
from .option import Option, add_options, resolve, state_home
from .options import RUN_OPTIONS, S3_OPTIONS, STORE_OPTIONS, TRANSFER_OPTIONS
from .parsers import (
    ADDRESSING_STYLES,
    RESERVE_CAP,
    RESERVE_SHARE,
    SSE_CHOICES,
    ConfigError,
    default_upload_reserve,
    log_stream_name,
    parse_byte_size,
    parse_bytes_in_flight,
    parse_choice,
    parse_count,
    parse_duration,
    parse_duration_or_off,
    parse_exit_code,
    parse_job_id,
    parse_kms_key_id,
    parse_log_group,
    parse_log_stream,
    parse_signal,
    parse_sse,
    parse_switch,
    parse_sync_signal,
)
from .store import (
    S3Settings,
    StoreSettings,
    default_store_uri,
    load_s3_settings,
    load_store_settings,
)


@dataclass(frozen=True)
class Settings:
    command: tuple[str, ...]
    checkpoint_uri: str
    checkpoint_dir: Path
    job_id: str
    job_id_source: str
    sync_interval: float
    log_group: str | None
    log_stream: str
    child_output: str
    sample_interval: float
    stop_signal: Sig
    imds: str
    imds_endpoint: str
    imds_endpoint_set: bool
    imds_interval: float
    grace_period: float
    upload_reserve: float
    checkpoint_keep: int
    batch_attempt: int | None
    batch_job_id: str | None = None  # AWS_BATCH_JOB_ID: this attempt's own job in Batch
    batch_job_queue: str | None = None
    batch_compute_environment: str | None = None
    continue_jobs: bool = False
    #: after this many interruptions of the job, continue it on ``fallback_queue``
    fallback_queue: str | None = None
    fallback_after: int | None = None
    #: a continuation's: the Batch job it continues, and why it was submitted
    continues_from: str | None = None
    continued_because: str | None = None
    sync_signal: Sig = DEFAULT_SYNC_SIGNAL  # SIGUSR1; real-time ones too: SIGRTMIN+2
    job_exit_75_as: int | None = None
    imds_v1: str = "allow"  # "allow" or "forbid": IMDSv1 fallback when the token PUT fails
    imds_disabled: bool = False  # AWS_EC2_METADATA_DISABLED=true: no metadata requests at all
    log_format: str = "auto"
    log_level: str = "info"
    log_color: bool = True  # no NO_COLOR, no TERM=dumb: colour if the terminal allows
    s3: S3Settings = field(default_factory=S3Settings)
    rehash: str = "open"
    stop_signal_to: str = "main"  # "main" (the job's command) or "group" (its process group)
    #: sync early when the pending bytes would take longer than this to upload (0: never)
    max_pending_upload: float = 60.0
    max_bytes_in_flight: int = DEFAULT_MAX_BYTES_IN_FLIGHT  # chunk bytes transfers hold
    #: keep retrying transient store failures at start this long (--startup-timeout)
    startup_timeout: float = 180.0
    child_environ: Mapping[str, str] = field(repr=False, default_factory=dict)
    group: GroupSettings | None = None  # one node of a multi-node group (docs/groups.md)


def derived_job_id(command: tuple[str, ...]) -> str:
    return "job-" + hashlib.sha256("\0".join(command).encode()).hexdigest()[:12]


def _job_id(
    args: argparse.Namespace, environ: Mapping[str, str], command: tuple[str, ...]
) -> tuple[str, str]:
    opt = next(o for o in RUN_OPTIONS if o.flag == "--job-id")
    explicit = resolve(opt, args, environ)
    if explicit:
        return explicit, "option" if getattr(args, "job_id", None) else opt.env
    batch = environ.get("AWS_BATCH_JOB_ID")
    if batch:
        try:
            return parse_job_id(batch), "AWS_BATCH_JOB_ID"
        except ValueError as exc:
            raise ConfigError("AWS_BATCH_JOB_ID", str(exc)) from None
    return derived_job_id(command), "derived from the command"


def load_settings(
    args: argparse.Namespace, command: list[str], environ: Mapping[str, str]
) -> Settings:
    if not command:
        raise ConfigError(
            "COMMAND", "no command given: spot-agent run [OPTIONS] -- COMMAND [ARG...]"
        )
    cmd = tuple(command)
    values = {
        o.dest: resolve(o, args, environ)
        for o in RUN_OPTIONS
        if o.flag != "--job-id" and o not in S3_OPTIONS
    }
    group = load_group_settings(args, environ)
    s3 = load_s3_settings(args, environ)
    job_id, source = _job_id(args, environ, cmd)
    checkpoint_dir = values["checkpoint_dir"]
    checkpoint_dir = (
        Path(checkpoint_dir).expanduser().absolute()
        if checkpoint_dir
        else state_home(environ) / "jobs" / job_id / "checkpoint"
    )
    if values["grace_period"] <= 0:
        raise ConfigError("--grace-period (SPOT_AGENT_GRACE_PERIOD)", "must be longer than 0s")
    if values["upload_reserve"] is None:
        values["upload_reserve"] = default_upload_reserve(values["grace_period"])
    elif values["upload_reserve"] >= values["grace_period"]:
        raise ConfigError(
            "--upload-reserve (SPOT_AGENT_UPLOAD_RESERVE)",
            f"must be shorter than the grace period ({values['grace_period']:g}s), "
            f"got {values['upload_reserve']:g}s",
        )
    checkpoint_uri = values["checkpoint_uri"] or default_store_uri(environ)
    batch_calls = values["continue_after_last_attempt"] or bool(values["fallback_queue"])
    if uses_aws(checkpoint_uri, values["log_group"], batch_calls):
        check_aws_environment(environ)
    batch_attempt = environ.get("AWS_BATCH_JOB_ATTEMPT", "")
    return Settings(
        command=cmd,
        checkpoint_uri=checkpoint_uri,
        checkpoint_dir=checkpoint_dir,
        job_id=job_id,
        job_id_source=source,
        sync_interval=values["sync_interval"],
        log_group=values["log_group"],
        log_stream=log_stream_name(
            values["log_stream"],
            job_id=job_id,
            host=environ.get("HOSTNAME") or socket.gethostname(),
        ),
        child_output=values["child_output"],
        sample_interval=values["sample_interval"],
        stop_signal=values["stop_signal"],
        imds=values["imds"],
        imds_endpoint=imds_endpoint(environ),
        imds_endpoint_set=bool(environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")),
        imds_interval=max(values["imds_interval"], 0.1),
        grace_period=values["grace_period"],
        upload_reserve=values["upload_reserve"],
        checkpoint_keep=values["checkpoint_keep"],
        batch_attempt=int(batch_attempt) if batch_attempt.isdigit() else None,
        batch_job_id=environ.get("AWS_BATCH_JOB_ID") or None,
        batch_job_queue=environ.get("AWS_BATCH_JQ_NAME") or None,
        batch_compute_environment=environ.get("AWS_BATCH_CE_NAME") or None,
        continue_jobs=values["continue_after_last_attempt"],
        fallback_queue=values["fallback_queue"],
        fallback_after=fallback_after(values),
        continues_from=environ.get(CONTINUES_FROM) or None,
        continued_because=environ.get(CONTINUED_BECAUSE) or None,
        sync_signal=values["sync_signal"],
        job_exit_75_as=values["job_exit_75_as"],
        imds_v1=imds_v1(values, environ),
        imds_disabled=imds_disabled(environ),
        log_format=values["log_format"],
        log_level=values["log_level"],
        log_color=not environ.get("NO_COLOR") and environ.get("TERM") != "dumb",
        s3=s3,
        rehash=values["rehash"],
        stop_signal_to=values["stop_signal_to"],
        max_pending_upload=values["max_pending_upload"],
        max_bytes_in_flight=values["max_bytes_in_flight"],
        startup_timeout=values["startup_timeout"],
        child_environ=child_environ(environ),
        group=group,
    )


_SECRET_VARIABLE = re.compile(
    r"SECRET|PASSW(?:OR)?D|PASSPHRASE|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY|^AWS_ACCESS_KEY_ID$",
    re.IGNORECASE,
)


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names say they are secrets: the logs mask
    them wherever they would appear (``logs.set_known_secrets``)."""
    return [v for k, v in environ.items() if v and _SECRET_VARIABLE.search(k)]


__all__ = [
    "ADDRESSING_STYLES",
    "ARRAY_INDEX_CARRIED",
    "BECAUSE_BUDGET",
    "BECAUSE_LAST_ATTEMPT",
    "CONTINUED_BECAUSE",
    "CONTINUES_FROM",
    "RESERVE_CAP",
    "RESERVE_SHARE",
    "RUN_OPTIONS",
    "S3_OPTIONS",
    "SSE_CHOICES",
    "STORE_OPTIONS",
    "TRANSFER_OPTIONS",
    "ConfigError",
    "GroupSettings",
    "Option",
    "S3Settings",
    "Settings",
    "StoreSettings",
    "add_options",
    "default_store_uri",
    "default_upload_reserve",
    "derived_job_id",
    "load_s3_settings",
    "load_settings",
    "load_store_settings",
    "log_stream_name",
    "parse_byte_size",
    "parse_bytes_in_flight",
    "parse_choice",
    "parse_count",
    "parse_duration",
    "parse_duration_or_off",
    "parse_exit_code",
    "parse_job_id",
    "parse_kms_key_id",
    "parse_log_group",
    "parse_log_stream",
    "parse_signal",
    "parse_sse",
    "parse_switch",
    "parse_sync_signal",
    "secret_values",
]
