"""``spot-agent batch job-definition``: its options, and printing or registering the
definition."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..config import ConfigError, parse_duration
from ..config.aws_environment import check_aws_environment, sdk_region
from .client import batch_client
from .jobdef import DEFAULT_STOP_TIMEOUT, MAX_ATTEMPTS, JobDefinitionSpec, build_job_definition


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
