"""Continuing a job at run time: after an interrupted attempt's final checkpoint, submit a
new Batch job that restores the same checkpoints, on the last allowed attempt or, past
``--fallback-after`` interruptions, to the on-demand ``--fallback-queue``. Never raises into
the run: a failure is logged with the action that resumes the job by hand."""

from __future__ import annotations

from typing import Any

from .. import logs
from ..config import (
    ARRAY_INDEX_CARRIED,
    BECAUSE_BUDGET,
    BECAUSE_LAST_ATTEMPT,
    CONTINUED_BECAUSE,
    CONTINUES_FROM,
    Settings,
)
from .client import batch_client

log = logs.get_logger()


class ContinuationError(Exception):
    """DescribeJobs did not give what a continuation needs."""


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


def _in_batch(s: Settings, skipped: str) -> bool:
    if s.batch_job_id and s.batch_attempt is not None:
        return True
    log.warning(
        skipped,
        why="not running as an AWS Batch job (AWS_BATCH_JOB_ID or AWS_BATCH_JOB_ATTEMPT unset)",
    )
    return False


def _unless_ended(client: Any, job_id: str, skipped: str) -> dict[str, Any] | None:
    """This job as Batch describes it, or None (logged as ``skipped``) when an operator
    terminated or cancelled it through Batch: a continuation must not undo that."""
    job = describe_self(client, job_id)
    if job.get("isTerminated") or job.get("isCancelled"):
        log.info(skipped, why="the job was terminated or cancelled through Batch; not undoing that")
        return None
    return job


def _client(s: Settings) -> Any:
    """The Batch client of both submissions, in the region the store resolved (AWS_REGION,
    which botocore does not read, included)."""
    return batch_client(s.s3.aws_region)


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
        client = client if client is not None else _client(s)
        job = _unless_ended(client, s.batch_job_id, "batch.fallback_skipped")
        if job is None:
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
        client = client if client is not None else _client(s)
        job = _unless_ended(client, s.batch_job_id, "batch.continuation_skipped")
        if job is None:
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
