"""agent/batch/ against moto's Batch API over real HTTP (the ``moto_server`` fixture).

moto cannot run a Batch job's container here (no Docker engine): submitted jobs fail at
once. Only the API calls matter: register, describe, submit.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from agent import exits
from agent.batch import continuation
from agent.batch.jobdef import JobDefinitionSpec, build_job_definition
from tests.agentproc import AgentRun, agent_env, cli, run_agent, start_agent
from tests.conftest import isolate_aws_environment

REGION = "us-east-1"
_names = itertools.count(1)


def sdk_env(endpoint: str) -> dict[str, str]:
    """What a container's SDK would read; every endpoint is the local moto server."""
    return {
        "AWS_ENDPOINT_URL_BATCH": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def batch_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_server: str
) -> Iterator[dict[str, str]]:
    isolate_aws_environment(monkeypatch, tmp_path)
    env = sdk_env(moto_server)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


@pytest.fixture
def client(batch_env: dict[str, str]) -> Any:
    # No endpoint_url: the client must find moto through AWS_ENDPOINT_URL_BATCH.
    return boto3.session.Session().client("batch")


@pytest.fixture
def queue(client: Any, moto_server: str) -> str:
    """A job queue on an unmanaged compute environment (moto wants a real IAM role)."""
    n = next(_names)
    iam = boto3.session.Session().client("iam", endpoint_url=moto_server)
    role = iam.create_role(
        RoleName=f"batch-service-{n}",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "batch.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    ce = client.create_compute_environment(
        computeEnvironmentName=f"spot-ce-{n}", type="UNMANAGED", state="ENABLED", serviceRole=role
    )["computeEnvironmentArn"]
    return str(
        client.create_job_queue(
            jobQueueName=f"spot-q-{n}",
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
        )["jobQueueArn"]
    )


def register(client: Any, **changes: Any) -> str:
    changes.setdefault("checkpoint_uri", "s3://bucket/ckpt")
    spec = JobDefinitionSpec(f"train-{next(_names)}", "spot-agent-job:1", **changes)
    return str(client.register_job_definition(**build_job_definition(spec))["jobDefinitionArn"])


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["container"]["environment"]}


def test_botocore_reads_the_batch_endpoint_variable(client: Any, moto_server: str) -> None:
    assert client.meta.endpoint_url == moto_server


def test_moto_accepts_the_job_definition(client: Any) -> None:
    arn = register(client, checkpoint_uri="s3://bucket/p", timeout=3600, attempts=7)
    found = client.describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"][0]
    assert found["retryStrategy"]["attempts"] == 7
    first = found["retryStrategy"]["evaluateOnExit"][0]
    assert (first["action"].upper(), first["onExitCode"]) == ("RETRY", "75")  # any case
    assert found["containerProperties"]["linuxParameters"] == {"initProcessEnabled": False}
    assert found["timeout"] == {"attemptDurationSeconds": 3600}


def test_cli_registers_and_prints_the_arn(tmp_path: Path, batch_env: dict[str, str]) -> None:
    env = {**agent_env(tmp_path), **batch_env}
    out = cli(
        tmp_path,
        *("batch", "job-definition", "--name", "cli-def", "--image", "img:1", "--register"),
        *("--checkpoint-uri", "s3://bucket/ckpt"),
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("arn:aws:batch:us-east-1:")
    assert out.stdout.strip().endswith(":job-definition/cli-def:1")


def submit(client: Any, queue: str, jobdef: str) -> str:
    return str(
        client.submit_job(
            jobName="train",
            jobQueue=queue,
            jobDefinition=jobdef,
            parameters={"epochs": "90"},
            containerOverrides={
                "command": ["python", "train.py", "Ref::epochs"],
                "environment": [{"name": "LEARNING_RATE", "value": "0.1"}],
            },
        )["jobId"]
    )


def test_continuation_through_moto(client: Any, queue: str) -> None:
    jobdef = register(client, attempts=10)
    original = submit(client, queue, jobdef)
    me = continuation.describe_self(client, original)
    assert continuation.allowed_attempts(client, me) == 10
    request = continuation.build_continuation_request(me, original, original)
    new_id = continuation.submit_continuation(client, request)
    assert new_id != original
    new = continuation.describe_self(client, new_id)
    assert new["jobQueue"] == me["jobQueue"] == queue
    assert new["jobDefinition"] == jobdef
    assert new["parameters"] == {"epochs": "90"}
    assert new["container"]["command"] == ["python", "train.py", "Ref::epochs"]
    env = env_of(new)
    assert env["SPOT_AGENT_JOB_ID"] == original
    assert env["SPOT_AGENT_CONTINUES_FROM"] == original
    assert env["LEARNING_RATE"] == "0.1"
    assert env["AWS_BATCH_JOB_ID"] == new_id  # Batch's own, not copied from the original


def test_describe_self_of_an_unknown_job_is_an_error(client: Any) -> None:
    with pytest.raises(continuation.ContinuationError):
        continuation.describe_self(client, "0000-missing")


# -- the whole agent, interrupted on its last attempt -----------------------------------

JOB = textwrap.dedent("""
    import checkpoint, signal, sys, time
    checkpoint.save_json("state.json", {"step": 41})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("job running", flush=True)
    while True:
        time.sleep(0.05)
""")


def run_interrupted(tmp_path: Path, env: dict[str, str]) -> Any:
    r = start_agent(tmp_path, [], [sys.executable, "-c", JOB], env=env)
    r.wait_for(lambda: r.has_line("job running"), what="the job to start")
    r.signal(signal.SIGTERM)
    assert r.wait(60) == 75, r.stdout + r.stderr
    assert r.event("sync.committed")["reason"] == "interruption"
    return r


def agent_batch_env(
    tmp_path: Path, sdk: dict[str, str], job_id: str, attempt: int
) -> dict[str, str]:
    return {
        **agent_env(tmp_path),
        **sdk,
        "AWS_BATCH_JOB_ID": job_id,
        "AWS_BATCH_JOB_ATTEMPT": str(attempt),
        "AWS_BATCH_JQ_NAME": "spot-q",
        "AWS_BATCH_CE_NAME": "spot-ce",
        "SPOT_AGENT_CONTINUE_JOBS": "true",
    }


def test_agent_submits_a_continuation_on_the_last_attempt(
    tmp_path: Path, client: Any, queue: str, batch_env: dict[str, str]
) -> None:
    original = submit(client, queue, register(client, attempts=10))
    r = run_interrupted(tmp_path, agent_batch_env(tmp_path, batch_env, original, 10))
    submitted = r.event("batch.continuation_submitted")
    new = continuation.describe_self(client, submitted["continuation_job_id"])
    assert env_of(new)["SPOT_AGENT_JOB_ID"] == original
    events = r.events()
    assert all(e.get("batch_job_queue") == "spot-q" for e in events)
    assert all(e.get("batch_compute_environment") == "spot-ce" for e in events)
    names = [e["event"] for e in events]
    assert names.index("sync.committed") < names.index("batch.continuation_submitted")


def test_agent_leaves_earlier_attempts_to_batchs_retry(
    tmp_path: Path, client: Any, queue: str, batch_env: dict[str, str]
) -> None:
    original = submit(client, queue, register(client, attempts=10))
    r = run_interrupted(tmp_path, agent_batch_env(tmp_path, batch_env, original, 3))
    assert r.event("batch.retry_expected")["attempts"] == 10
    assert "batch.continuation_submitted" not in [e["event"] for e in r.events()]


def test_failure_to_submit_keeps_exit_75_and_the_checkpoint(
    tmp_path: Path, batch_env: dict[str, str], closed_endpoint: str
) -> None:
    unreachable = {**batch_env, "AWS_ENDPOINT_URL_BATCH": closed_endpoint}
    r = run_interrupted(tmp_path, agent_batch_env(tmp_path, unreachable, "abc-1", 10))
    failed = r.event("batch.continuation_failed")
    assert failed["error_type"] == "EndpointConnectionError"
    assert r.event("agent.exit")["committed"] == 1


# -- the interruption budget: after the Nth interruption, on to the fallback queue -------


def on_demand_queue(client: Any, spot_queue: str) -> str:
    """A second queue (the on-demand one) on the spot queue's compute environment."""
    found = client.describe_job_queues(jobQueues=[spot_queue])["jobQueues"][0]
    ce = found["computeEnvironmentOrder"][0]["computeEnvironment"]
    name = found["jobQueueName"].replace("spot-q", "ondemand-q")
    client.create_job_queue(
        jobQueueName=name,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )
    return str(name)


def batch_decision(strategy: dict[str, Any], exit_code: int, status_reason: str) -> str:
    """What Batch does with an attempt that ended so: the first matching evaluateOnExit
    entry's action (patterns may end in *), else RETRY while attempts are left."""
    for rule in strategy["evaluateOnExit"]:
        tests = [
            ("onExitCode", str(exit_code)),
            ("onStatusReason", status_reason),
            ("onReason", "Essential container in task exited"),
        ]
        if all(fnmatch.fnmatchcase(v, rule[k]) for k, v in tests if k in rule):
            return str(rule["action"])
    return "RETRY"


def interrupt(tmp: Path, env: dict[str, str]) -> AgentRun:
    r = start_agent(tmp, [], [sys.executable, "-c", JOB], env=env)
    r.wait_for(lambda: r.has_line("job running"), what="the job to start")
    r.signal(signal.SIGTERM)
    r.wait(60)
    return r


def test_second_interruption_moves_the_job_to_the_fallback_queue(
    tmp_path: Path, client: Any, queue: str, batch_env: dict[str, str]
) -> None:
    fallback = on_demand_queue(client, queue)
    spec = JobDefinitionSpec(
        "train-fb", "img:1", checkpoint_uri="s3://bucket/p", fallback_queue=fallback,
        fallback_after=2,
    )  # fmt: skip
    definition = build_job_definition(spec)
    jobdef = client.register_job_definition(**definition)["jobDefinitionArn"]
    original = submit(client, queue, jobdef)
    from_definition = {
        e["name"]: e["value"]
        for e in definition["containerProperties"]["environment"]
        if e["name"].startswith("SPOT_AGENT_FALLBACK_")
    }
    assert from_definition == {
        "SPOT_AGENT_FALLBACK_QUEUE": fallback,
        "SPOT_AGENT_FALLBACK_AFTER": "2",
    }

    def attempt_env(n: int) -> dict[str, str]:
        return {**agent_batch_env(tmp_path, batch_env, original, n), **from_definition}

    first = interrupt(tmp_path, attempt_env(1))
    assert first.proc.returncode == exits.INTERRUPTED, first.stdout + first.stderr
    assert "batch.continuation_submitted" not in [e["event"] for e in first.events()]
    assert first.event("batch.retry_expected")["batch_attempt"] == 1

    second = interrupt(tmp_path, attempt_env(2))
    assert second.proc.returncode == exits.MOVED_TO_FALLBACK, second.stdout + second.stderr
    submitted = second.event("batch.continuation_submitted")
    assert submitted["because"] == "interruption-budget" and submitted["interruptions"] == 2
    names = [e["event"] for e in second.events()]
    assert names.index("shutdown.final_checkpoint") < names.index("batch.continuation_submitted")
    new = continuation.describe_self(client, submitted["continuation_job_id"])
    assert new["jobQueue"].split("/")[-1] == fallback
    assert new["jobDefinition"] == jobdef
    env = env_of(new)
    assert env["SPOT_AGENT_JOB_ID"] == original  # the same checkpoints
    assert env["SPOT_AGENT_CONTINUED_BECAUSE"] == "interruption-budget"
    assert env["SPOT_AGENT_CONTINUES_FROM"] == original

    strategy = definition["retryStrategy"]
    assert batch_decision(strategy, exits.MOVED_TO_FALLBACK, "") == "EXIT"
    assert batch_decision(strategy, exits.INTERRUPTED, "") == "RETRY"  # the check can fail
    assert batch_decision(strategy, 1, "") == "EXIT"

    # The continuation runs on the on-demand queue, resumes the checkpoint and finishes.
    cont_env = {
        **agent_batch_env(tmp_path, batch_env, submitted["continuation_job_id"], 1),
        # what the continuation's environment carries, but the store: this test's is local
        **{k: v for k, v in env.items() if k.startswith("SPOT_AGENT_") and "URI" not in k},
        "AWS_BATCH_JQ_NAME": fallback,
    }
    read = "import checkpoint; print('resumed at', checkpoint.load_json('state.json')['step'])"
    third = run_agent(tmp_path, [], [sys.executable, "-c", read], env=cont_env)
    assert third.proc.returncode == 0, third.stdout + third.stderr
    assert third.has_line("resumed at 41")

    out = cli(tmp_path, "checkpoints", "timeline", f"--job-id={original}", "--json", env=cont_env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    a1, a2, a3 = doc["attempts"]
    assert [a["end"] for a in (a1, a2, a3)] == ["interrupted", "interrupted", "exited"]
    assert a2["exit_code"] == exits.MOVED_TO_FALLBACK
    assert a2["continuation"] == {
        "job_id": submitted["continuation_job_id"],
        "queue": fallback,
        "because": "interruption-budget",
    }
    assert a3["continued_because"] == "interruption-budget"
    assert a3["continues_from"] == original
    assert a3["batch_job_queue"] == fallback
    assert doc["totals"]["interruptions"] == 2
    table = cli(tmp_path, "checkpoints", "timeline", f"--job-id={original}", env=cont_env)
    assert f"on {fallback} (interruption-budget)" in table.stdout


def test_a_fallback_that_cannot_be_submitted_leaves_the_retry_to_batch(
    tmp_path: Path, batch_env: dict[str, str], closed_endpoint: str
) -> None:
    unreachable = {**batch_env, "AWS_ENDPOINT_URL_BATCH": closed_endpoint}
    env = {
        **agent_batch_env(tmp_path, unreachable, "abc-1", 1),
        "SPOT_AGENT_FALLBACK_QUEUE": "ondemand-q",
        "SPOT_AGENT_FALLBACK_AFTER": "1",
    }
    r = run_interrupted(tmp_path, env)  # exit 75: Batch retries it on spot as before
    assert r.event("batch.continuation_failed")["error_type"] == "EndpointConnectionError"
    assert r.event("agent.exit")["committed"] == 1
    out = cli(tmp_path, "checkpoints", "timeline", "--job-id=abc-1", "--json", env=env)
    (attempt,) = json.loads(out.stdout)["attempts"]
    assert attempt["exit_code"] == exits.INTERRUPTED and attempt["continuation"] is None
