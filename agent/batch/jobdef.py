"""The job definition: the retry strategy, what a definition may ask for, and the
RegisterJobDefinition request ``spot-agent batch job-definition`` prints or registers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from checkpoint.engine.store.s3 import check_bucket_name
from checkpoint.engine.store.uri import parse_file_uri
from checkpoint.errors import StoreURIError

from .. import exits
from ..config import ConfigError, parse_log_group
from ..config.parsers import parse_job_queue

#: What ``spot-agent run`` exits with after an interruption (see agent.exits).
INTERRUPTED_EXIT_CODE = exits.INTERRUPTED
#: Batch's ceiling for retryStrategy.attempts.
MAX_ATTEMPTS = 10
#: The ECS agent's default ECS_CONTAINER_STOP_TIMEOUT, and Fargate's fixed stop timeout:
#: what a Batch container gets between SIGTERM and SIGKILL unless the host is configured.
DEFAULT_STOP_TIMEOUT = 30
#: The shortest stop timeout a definition may ask for: the agent's reserve scales with the
#: grace period (a third of it), and 10 s (docker stop's) is the shortest tested end to end.
MIN_STOP_TIMEOUT = 10

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")


def retry_strategy(attempts: int = MAX_ATTEMPTS) -> dict[str, Any]:
    """Retry interruptions (exit 75, spot reclaim), stop on anything else. First match wins."""
    return {
        "attempts": attempts,
        "evaluateOnExit": [
            *({"action": "RETRY", "onExitCode": str(code)} for code in exits.RETRYABLE),
            {"action": "RETRY", "onStatusReason": "Host EC2*"},
            {"action": "EXIT", "onReason": "*"},
        ],
    }


@dataclass(frozen=True)
class JobDefinitionSpec:
    name: str
    image: str
    vcpus: str = "1"
    memory: int = 2048  # MiB
    attempts: int = MAX_ATTEMPTS
    platform: str = "EC2"
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    timeout: int | None = None  # attemptDurationSeconds
    log_group: str | None = None
    checkpoint_uri: str | None = None
    job_role_arn: str | None = None
    execution_role_arn: str | None = None
    ephemeral_storage: int | None = None  # GiB, Fargate only
    continue_jobs: bool = False
    #: after this many interruptions, continue the job on this (on-demand) queue
    fallback_queue: str | None = None
    fallback_after: int | None = None
    #: accept a local (file://) store or none: only right when it lives on a shared volume
    allow_local_store: bool = False

    def check(self) -> None:
        """Raise ConfigError for what Batch would refuse or what would break the agent."""
        if not _NAME.match(self.name):
            raise ConfigError("--name", "1-128 letters, digits, - and _, starting alphanumeric")
        if not 1 <= self.attempts <= MAX_ATTEMPTS:
            raise ConfigError("--attempts", f"Batch allows 1 to {MAX_ATTEMPTS}")
        if self.timeout is not None and self.timeout < 60:
            raise ConfigError("--timeout", "Batch's minimum attempt duration is 60 s")
        if self.stop_timeout < MIN_STOP_TIMEOUT:
            raise ConfigError(
                "--stop-timeout",
                f"must be at least {MIN_STOP_TIMEOUT} s: the job needs time to stop and the "
                "agent to commit the final checkpoint",
            )
        if self.platform == "FARGATE":
            if not self.execution_role_arn:
                raise ConfigError("--execution-role-arn", "Fargate jobs need an execution role")
            if self.stop_timeout > DEFAULT_STOP_TIMEOUT:
                raise ConfigError(
                    "--stop-timeout",
                    "Batch on Fargate stops a container 30 s after SIGTERM and a job "
                    "definition cannot change that",
                )
            if self.ephemeral_storage is not None and not 21 <= self.ephemeral_storage <= 200:
                raise ConfigError("--ephemeral-storage", "Fargate allows 21 to 200 GiB")
        elif self.ephemeral_storage is not None:
            raise ConfigError("--ephemeral-storage", "only for --platform FARGATE")
        if (self.fallback_queue is None) != (self.fallback_after is None):
            raise ConfigError(
                "--fallback-after" if self.fallback_after is None else "--fallback-queue",
                "--fallback-queue and --fallback-after go together: give both or neither",
            )
        if self.fallback_after is not None and self.fallback_after < 1:
            raise ConfigError("--fallback-after", "must be at least 1")
        if self.fallback_queue is not None:
            try:
                parse_job_queue(self.fallback_queue)
            except ValueError as exc:
                raise ConfigError("--fallback-queue", str(exc)) from None
        check_store_uri(self.checkpoint_uri, allow_local=self.allow_local_store)
        if self.log_group is not None:
            try:
                parse_log_group(self.log_group)
            except ValueError as exc:
                raise ConfigError("--log-group", str(exc)) from None


_LOCAL_STORE_LOSES_WORK = (
    "a job on Batch runs each attempt in a new container, so a store inside it is gone "
    "on retry and every attempt starts over"
)


def check_store_uri(uri: str | None, *, allow_local: bool) -> None:
    """Raise ConfigError unless ``uri`` is a well-formed ``s3://bucket/prefix`` (or, with
    ``allow_local``, any well-formed URI, or none)."""
    setting = "--checkpoint-uri"
    if not uri:
        if allow_local:
            return
        raise ConfigError(
            setting,
            f"not given: {_LOCAL_STORE_LOSES_WORK}; give s3://bucket/prefix (or "
            "--allow-local-store for a store on a shared volume)",
        )
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if not uri.lower().startswith("s3://") or not parts.netloc:
            raise ConfigError(setting, f"{uri!r} is not an S3 URI: use s3://bucket/prefix")
        try:
            check_bucket_name(parts.netloc, uri)
        except StoreURIError as exc:
            raise ConfigError(setting, str(exc)) from None
        return
    if scheme == "file" and allow_local:
        try:
            parse_file_uri(uri)
        except StoreURIError as exc:
            raise ConfigError(setting, str(exc)) from None
        return
    if scheme == "file":
        raise ConfigError(
            setting,
            f"{uri!r} is a local store: {_LOCAL_STORE_LOSES_WORK}; use s3://bucket/prefix (or "
            "--allow-local-store if that path is a shared volume)",
        )
    raise ConfigError(setting, f"{uri!r} is not a checkpoint URI: use s3://bucket/prefix")


def build_job_definition(spec: JobDefinitionSpec) -> dict[str, Any]:
    """The RegisterJobDefinition request (boto3 keyword arguments) for ``spec``."""
    spec.check()
    env = {
        "SPOT_AGENT_GRACE_PERIOD": f"{spec.stop_timeout}s",
        # Fargate has no instance metadata service to poll; on EC2 "auto" finds it.
        "SPOT_AGENT_IMDS": "off" if spec.platform == "FARGATE" else "auto",
    }
    if spec.checkpoint_uri:
        env["SPOT_AGENT_CHECKPOINT_URI"] = spec.checkpoint_uri
    if spec.log_group:
        env["SPOT_AGENT_LOG_GROUP"] = spec.log_group
    if spec.continue_jobs:
        env["SPOT_AGENT_CONTINUE_JOBS"] = "true"
    if spec.fallback_queue is not None and spec.fallback_after is not None:
        env["SPOT_AGENT_FALLBACK_QUEUE"] = spec.fallback_queue
        env["SPOT_AGENT_FALLBACK_AFTER"] = str(spec.fallback_after)
    container: dict[str, Any] = {
        "image": spec.image,
        "resourceRequirements": [
            {"type": "VCPU", "value": spec.vcpus},
            {"type": "MEMORY", "value": str(spec.memory)},
        ],
        "environment": [{"name": k, "value": v} for k, v in env.items()],
        # The agent is PID 1: it forwards signals and reaps orphans itself.
        "linuxParameters": {"initProcessEnabled": False},
    }
    if spec.job_role_arn:
        container["jobRoleArn"] = spec.job_role_arn
    if spec.execution_role_arn:
        container["executionRoleArn"] = spec.execution_role_arn
    if spec.platform == "FARGATE":
        container["fargatePlatformConfiguration"] = {"platformVersion": "LATEST"}
        container["networkConfiguration"] = {"assignPublicIp": "DISABLED"}
        if spec.ephemeral_storage is not None:
            container["ephemeralStorage"] = {"sizeInGiB": spec.ephemeral_storage}
    request: dict[str, Any] = {
        "jobDefinitionName": spec.name,
        "type": "container",
        "platformCapabilities": [spec.platform],
        "containerProperties": container,
        "retryStrategy": retry_strategy(spec.attempts),
    }
    if spec.timeout is not None:
        request["timeout"] = {"attemptDurationSeconds": spec.timeout}
    return request
