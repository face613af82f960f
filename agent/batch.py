"""AWS Batch: a job definition right for spot, and continuing a job past its last attempt.

``spot-agent batch job-definition`` prints (or registers) a RegisterJobDefinition request
whose retry strategy retries exactly what an interruption looks like to Batch:

- exit code 75: the agent was interrupted and committed its final checkpoint;
- a status reason starting with ``Host EC2``: the spot instance was reclaimed before the
  agent could exit (Batch reports e.g. "Host EC2 (instance i-...) terminated.");
- anything else exits: a real failure of the job must not burn nine more attempts.

With ``--fallback-queue Q --fallback-after N``, the agent interrupted for the Nth time
(counted across the job's attempts and continuations, from the store) commits, submits a
continuation to Q (on-demand capacity) and exits 80, which the retry strategy does not
retry: the job stops gambling on spot.

Batch allows at most 10 attempts. A multi-day job on spot can be interrupted more often
than that, so with ``--continue-after-last-attempt`` the agent, interrupted on the last
allowed attempt, submits a *continuation*: a new job with the same definition, queue,
parameters and container overrides, whose ``SPOT_AGENT_JOB_ID`` is the checkpoint identity
of this one, so it restores the same checkpoints. The functions here take a boto3 Batch
client, so they are tested against moto's Batch API.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from checkpoint.engine.store.s3 import check_bucket_name
from checkpoint.engine.store.uri import parse_file_uri
from checkpoint.errors import StoreURIError

from . import exits, logs
from .config import (
    ARRAY_INDEX_CARRIED,
    BECAUSE_BUDGET,
    BECAUSE_LAST_ATTEMPT,
    CONTINUED_BECAUSE,
    CONTINUES_FROM,
    ConfigError,
    Settings,
    parse_duration,
    parse_log_group,
)
from .config.aws_environment import check_aws_environment, sdk_region
from .config.parsers import parse_job_queue

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

log = logs.get_logger()


class ContinuationError(Exception):
    """DescribeJobs did not give what a continuation needs."""


# -- the job definition -----------------------------------------------------------------


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


# -- continuation past the last attempt -------------------------------------------------


def describe_self(client: Any, batch_job_id: str) -> dict[str, Any]:
    """DescribeJobs of this job (an array child's id ``parent:N`` works too)."""
    jobs = client.describe_jobs(jobs=[batch_job_id]).get("jobs") or []
    if not jobs:
        raise ContinuationError(f"DescribeJobs does not know job {batch_job_id}")
    job: dict[str, Any] = jobs[0]
    return job


def allowed_attempts(client: Any, job: dict[str, Any]) -> int:
    """retryStrategy.attempts of the job, else of its job definition; Batch's default is 1."""
    strategy = job.get("retryStrategy") or {}
    if "attempts" not in strategy:
        found = client.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])
        definitions = found.get("jobDefinitions") or []
        strategy = (definitions[0].get("retryStrategy") or {}) if definitions else {}
    return int(strategy.get("attempts", 1))


def build_continuation_request(
    job: dict[str, Any],
    checkpoint_job_id: str,
    continues_from: str,
    because: str = BECAUSE_LAST_ATTEMPT,
    queue: str | None = None,
) -> dict[str, Any]:
    """A SubmitJob request that runs ``job`` again and restores its checkpoints.

    Same job definition, queue, parameters, command, environment and resources; the
    environment gains SPOT_AGENT_JOB_ID (the checkpoint identity), why it was submitted and,
    for an array child, its index; ``queue``, when given, replaces the job's queue (the
    fallback). Not carried over: dependsOn (already met), array properties (a child goes on
    as one job) and tags (copying them needs batch:TagResource).
    """
    for key in ("jobName", "jobQueue", "jobDefinition"):
        if not job.get(key):
            raise ContinuationError(f"DescribeJobs gave no {key}")
    container = job.get("container") or {}
    own = {"SPOT_AGENT_JOB_ID", CONTINUES_FROM, CONTINUED_BECAUSE, ARRAY_INDEX_CARRIED}
    given = [
        {"name": e["name"], "value": e.get("value", "")}
        for e in container.get("environment") or []
        # Batch sets AWS_BATCH_* itself and refuses them in a request.
        if not e["name"].startswith("AWS_BATCH_") and e["name"] not in own
    ]
    carried = {e["name"]: e.get("value", "") for e in container.get("environment") or []}
    index = (job.get("arrayProperties") or {}).get("index")
    array_index = str(index) if index is not None else carried.get(ARRAY_INDEX_CARRIED)
    env = [
        *given,
        {"name": "SPOT_AGENT_JOB_ID", "value": checkpoint_job_id},
        {"name": CONTINUES_FROM, "value": continues_from},
        {"name": CONTINUED_BECAUSE, "value": because},
    ]
    if array_index:
        env.append({"name": ARRAY_INDEX_CARRIED, "value": array_index})
    overrides: dict[str, Any] = {"environment": env}
    if container.get("command"):
        overrides["command"] = list(container["command"])
    resources = [
        {"type": r["type"], "value": r["value"]}
        for r in container.get("resourceRequirements") or []
        if r.get("type") in ("VCPU", "MEMORY", "GPU")
    ]
    if not resources and container.get("vcpus") and container.get("memory"):
        resources = [
            {"type": "VCPU", "value": str(container["vcpus"])},
            {"type": "MEMORY", "value": str(container["memory"])},
        ]
    if resources:
        overrides["resourceRequirements"] = resources
    request: dict[str, Any] = {
        "jobName": job["jobName"],
        "jobQueue": queue or job["jobQueue"],
        "jobDefinition": job["jobDefinition"],
        "containerOverrides": overrides,
    }
    if job.get("parameters"):
        request["parameters"] = dict(job["parameters"])
    if (job.get("retryStrategy") or {}).get("attempts"):
        request["retryStrategy"] = job["retryStrategy"]
    if (job.get("timeout") or {}).get("attemptDurationSeconds"):
        request["timeout"] = {"attemptDurationSeconds": job["timeout"]["attemptDurationSeconds"]}
    if job.get("shareIdentifier"):
        request["shareIdentifier"] = job["shareIdentifier"]
    if job.get("schedulingPriority") is not None:
        request["schedulingPriorityOverride"] = job["schedulingPriority"]
    if job.get("propagateTags") is not None:
        request["propagateTags"] = job["propagateTags"]
    return request


def submit_continuation(client: Any, request: dict[str, Any]) -> str:
    """SubmitJob; the new job's id."""
    return str(client.submit_job(**request)["jobId"])


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


def _in_batch(s: Settings, skipped: str) -> bool:
    if s.batch_job_id and s.batch_attempt is not None:
        return True
    log.warning(
        skipped,
        why="not running as an AWS Batch job (AWS_BATCH_JOB_ID or AWS_BATCH_JOB_ATTEMPT unset)",
    )
    return False


def _submit_failed(s: Settings, exc: Exception) -> None:
    log.error(
        "batch.continuation_failed",
        error=str(exc),
        error_type=type(exc).__name__,
        action=f"resubmit the job with SPOT_AGENT_JOB_ID={s.job_id} to resume from its checkpoints",
    )


def move_to_fallback(s: Settings, interruptions: int, client: Any | None = None) -> str | None:
    """The job's ``interruptions``-th interruption reached ``--fallback-after``: submit its
    continuation to ``--fallback-queue``. None (logged) when it could not be submitted: the
    attempt then exits as any interrupted one, and Batch retries it on spot. Returns the
    new job's id."""
    if not s.fallback_queue or not _in_batch(s, "batch.fallback_skipped"):
        return None
    assert s.batch_job_id is not None
    try:
        client = client if client is not None else batch_client()
        job = describe_self(client, s.batch_job_id)
        if job.get("isTerminated") or job.get("isCancelled"):
            log.info(
                "batch.fallback_skipped",
                why="the job was terminated or cancelled through Batch; not undoing that",
            )
            return None
        request = build_continuation_request(
            job, s.job_id, s.batch_job_id, BECAUSE_BUDGET, s.fallback_queue
        )
        new_job_id = submit_continuation(client, request)
    except Exception as exc:  # SDK, network, permissions: none may change the exit
        _submit_failed(s, exc)
        return None
    log.warning(
        "batch.continuation_submitted",
        continuation_job_id=new_job_id,
        because=BECAUSE_BUDGET,
        interruptions=interruptions,
        fallback_after=s.fallback_after,
        job_queue=s.fallback_queue,
        job_definition=request["jobDefinition"],
    )
    return new_job_id


def continue_after_interruption(s: Settings, client: Any | None = None) -> str | None:
    """After the final checkpoint of an interrupted attempt: submit a continuation if this
    was the last attempt Batch allows. Returns the new job id. Never raises: a failure is
    logged with its reason and changes nothing else."""
    if not s.continue_jobs or not _in_batch(s, "batch.continuation_skipped"):
        return None
    assert s.batch_job_id is not None and s.batch_attempt is not None
    try:
        client = client if client is not None else batch_client(s.s3.aws_region)
        job = describe_self(client, s.batch_job_id)
        if job.get("isTerminated") or job.get("isCancelled"):
            log.info(
                "batch.continuation_skipped",
                why="the job was terminated or cancelled through Batch; not undoing that",
            )
            return None
        allowed = allowed_attempts(client, job)
        if s.batch_attempt < allowed:
            log.info("batch.retry_expected", batch_attempt=s.batch_attempt, attempts=allowed)
            return None
        request = build_continuation_request(job, s.job_id, s.batch_job_id)
        new_job_id = submit_continuation(client, request)
    except Exception as exc:  # SDK, network, permissions: none may change the exit
        _submit_failed(s, exc)
        return None
    log.warning(
        "batch.continuation_submitted",
        continuation_job_id=new_job_id,
        because=BECAUSE_LAST_ATTEMPT,
        batch_attempt=s.batch_attempt,
        attempts=allowed,
        job_queue=request["jobQueue"],
        job_definition=request["jobDefinition"],
    )
    return new_job_id


# -- the command line: spot-agent batch ... ---------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="batch_action", metavar="ACTION", required=True)
    jd = sub.add_parser(
        "job-definition",
        help="print (or register) an AWS Batch job definition right for spot",
        description="Print a RegisterJobDefinition request (JSON, usable with "
        "`aws batch register-job-definition --cli-input-json`) whose retry strategy "
        "retries interruptions (exit 75, spot reclaim) and nothing else.",
    )
    jd.add_argument("--name", required=True, help="job definition name")
    jd.add_argument("--image", required=True, help="the job's image (built FROM spot-agent)")
    jd.add_argument("--vcpus", default="1", help="vCPUs (default %(default)s)")
    jd.add_argument("--memory", type=int, default=2048, help="MiB (default %(default)s)")
    jd.add_argument(
        "--attempts", type=int, default=MAX_ATTEMPTS, help="attempts (default and max 10)"
    )
    jd.add_argument("--log-group", help="sets SPOT_AGENT_LOG_GROUP")
    jd.add_argument(
        "--checkpoint-uri",
        help="sets SPOT_AGENT_CHECKPOINT_URI (s3://bucket/prefix); required, as a store "
        "inside the container is lost on retry",
    )
    jd.add_argument(
        "--allow-local-store",
        action="store_true",
        help="accept no --checkpoint-uri or a file:// one (only right for a shared volume)",
    )
    jd.add_argument(
        "--timeout", metavar="DURATION", help="attemptDurationSeconds (>= 60 s); default none"
    )
    jd.add_argument(
        "--stop-timeout",
        metavar="DURATION",
        default=f"{DEFAULT_STOP_TIMEOUT}s",
        help="time between SIGTERM and SIGKILL on the host, sets SPOT_AGENT_GRACE_PERIOD; "
        "on EC2 set ECS_CONTAINER_STOP_TIMEOUT on the instances to the same value "
        "(default %(default)s, the ECS agent's default)",
    )
    jd.add_argument("--job-role-arn", help="IAM role the job uses (S3, logs, batch)")
    jd.add_argument("--execution-role-arn", help="IAM role for pulling the image (Fargate)")
    jd.add_argument("--platform", choices=("EC2", "FARGATE"), default="EC2")
    jd.add_argument("--ephemeral-storage", type=int, metavar="GIB", help="Fargate only")
    jd.add_argument(
        "--continue-after-last-attempt",
        action="store_true",
        help="sets SPOT_AGENT_CONTINUE_JOBS=true: continue past the 10th attempt",
    )
    jd.add_argument(
        "--fallback-queue",
        metavar="QUEUE",
        help="sets SPOT_AGENT_FALLBACK_QUEUE: the (on-demand) job queue the job moves to "
        "after --fallback-after interruptions; that attempt exits 80, which is not retried",
    )
    jd.add_argument(
        "--fallback-after",
        type=int,
        metavar="N",
        help="sets SPOT_AGENT_FALLBACK_AFTER: interruptions of the job (across its attempts "
        "and continuations) before it moves to --fallback-queue",
    )
    jd.add_argument(
        "--register", action="store_true", help="call RegisterJobDefinition and print the ARN"
    )


def _seconds(raw: str | None, setting: str) -> int | None:
    if raw is None:
        return None
    try:
        return round(parse_duration(raw))
    except ValueError as exc:
        raise ConfigError(setting, str(exc)) from None


def main(args: argparse.Namespace) -> int:
    spec = JobDefinitionSpec(
        name=args.name,
        image=args.image,
        vcpus=str(args.vcpus),
        memory=args.memory,
        attempts=args.attempts,
        platform=args.platform,
        stop_timeout=_seconds(args.stop_timeout, "--stop-timeout") or DEFAULT_STOP_TIMEOUT,
        timeout=_seconds(args.timeout, "--timeout"),
        log_group=args.log_group,
        checkpoint_uri=args.checkpoint_uri,
        job_role_arn=args.job_role_arn,
        execution_role_arn=args.execution_role_arn,
        ephemeral_storage=args.ephemeral_storage,
        continue_jobs=args.continue_after_last_attempt,
        fallback_queue=args.fallback_queue,
        fallback_after=args.fallback_after,
        allow_local_store=args.allow_local_store,
    )
    request = build_job_definition(spec)
    if not args.register:
        print(json.dumps(request, indent=2))
        return 0
    from botocore.exceptions import BotoCoreError, ClientError

    check_aws_environment(os.environ)  # one line, not a traceback, for the SDK's settings
    try:
        answer = batch_client(sdk_region(os.environ)[0]).register_job_definition(**request)
    except (BotoCoreError, ClientError) as exc:
        print(f"spot-agent: RegisterJobDefinition failed: {exc}", file=sys.stderr)
        return 1
    print(answer["jobDefinitionArn"])
    return 0
