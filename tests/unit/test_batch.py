"""agent/batch/ without a server: the job definition, the continuation request, and when
the agent continues. Requests are checked against botocore's own Batch service model."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import structlog
from botocore.validate import ParamValidator

from agent import exits
from agent.batch import continuation, jobdef
from agent.batch.continuation import build_continuation_request
from agent.batch.jobdef import JobDefinitionSpec, build_job_definition
from agent.cli import build_parser
from agent.config import ConfigError, load_settings
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.uri import open_store
from tests.agentproc import cli

_MODEL = botocore.session.get_session().get_service_model("batch")


def assert_valid(operation: str, request: dict[str, Any]) -> None:
    shape = _MODEL.operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()


# -- job definition ---------------------------------------------------------------------


URI = "s3://bucket/ckpt"


def test_retry_strategy_retries_interruptions_and_nothing_else() -> None:
    rs = build_job_definition(JobDefinitionSpec("train", "img:1", checkpoint_uri=URI))[
        "retryStrategy"
    ]
    assert rs == {
        "attempts": 10,
        "evaluateOnExit": [
            {"action": "RETRY", "onExitCode": "75"},
            {"action": "RETRY", "onExitCode": "79"},
            {"action": "RETRY", "onExitCode": "81"},
            {"action": "RETRY", "onStatusReason": "Host EC2*"},
            {"action": "EXIT", "onReason": "*"},
        ],
    }
    assert str(jobdef.INTERRUPTED_EXIT_CODE) == rs["evaluateOnExit"][0]["onExitCode"]
    assert exits.INTERRUPTED == jobdef.INTERRUPTED_EXIT_CODE


def test_patterns_follow_batchs_documented_grammar() -> None:
    rules = jobdef.retry_strategy()["evaluateOnExit"]
    assert len(rules) <= 5  # Batch's limit
    for rule in rules:
        assert rule["action"] in ("RETRY", "EXIT")
        if "onExitCode" in rule:
            assert re.fullmatch(r"\d*\*?", rule["onExitCode"])
        for key in ("onStatusReason", "onReason"):
            if key in rule:
                assert re.fullmatch(r"[A-Za-z0-9.: \t]*\*?", rule[key]) and len(rule[key]) <= 512


def test_ec2_job_definition_is_valid_and_carries_the_agents_settings() -> None:
    spec = JobDefinitionSpec(
        "train-v2",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1",
        vcpus="4",
        memory=16384,
        attempts=10,
        stop_timeout=120,
        timeout=3 * 86400,
        log_group="/spot-agent/train",
        checkpoint_uri="s3://bucket/ckpt",
        job_role_arn="arn:aws:iam::123456789012:role/train-job",
        continue_jobs=True,
    )
    req = build_job_definition(spec)
    assert_valid("RegisterJobDefinition", req)
    cp = req["containerProperties"]
    env = {e["name"]: e["value"] for e in cp["environment"]}
    assert env == {
        "SPOT_AGENT_GRACE_PERIOD": "120s",
        "SPOT_AGENT_IMDS": "auto",
        "SPOT_AGENT_CHECKPOINT_URI": "s3://bucket/ckpt",
        "SPOT_AGENT_LOG_GROUP": "/spot-agent/train",
        "SPOT_AGENT_CONTINUE_JOBS": "true",
    }
    assert cp["linuxParameters"] == {"initProcessEnabled": False}
    assert "command" not in cp  # the image's CMD is the job
    assert req["timeout"] == {"attemptDurationSeconds": 259200}
    assert req["platformCapabilities"] == ["EC2"]


def test_no_timeout_unless_given() -> None:
    req = build_job_definition(JobDefinitionSpec("t", "img", checkpoint_uri=URI))
    assert "timeout" not in req
    assert_valid("RegisterJobDefinition", req)


def test_fargate_job_definition_is_valid() -> None:
    spec = JobDefinitionSpec(
        "t",
        "img",
        vcpus="0.5",
        memory=1024,
        platform="FARGATE",
        execution_role_arn="arn:aws:iam::123456789012:role/exec",
        ephemeral_storage=50,
        checkpoint_uri=URI,
    )
    req = build_job_definition(spec)
    assert_valid("RegisterJobDefinition", req)
    cp = req["containerProperties"]
    assert cp["ephemeralStorage"] == {"sizeInGiB": 50}
    env = {e["name"]: e["value"] for e in cp["environment"]}
    assert env["SPOT_AGENT_IMDS"] == "off"
    assert env["SPOT_AGENT_GRACE_PERIOD"] == "30s"


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"attempts": 11}, "--attempts"),
        ({"attempts": 0}, "--attempts"),
        ({"timeout": 59}, "--timeout"),
        ({"stop_timeout": 9}, "--stop-timeout"),
        ({"name": "bad name"}, "--name"),
        ({"platform": "FARGATE"}, "--execution-role-arn"),
        ({"platform": "FARGATE", "execution_role_arn": "x", "stop_timeout": 60}, "--stop-timeout"),
        ({"ephemeral_storage": 30}, "--ephemeral-storage"),
        # what would lose all progress: a store inside the container, a malformed URI
        ({"checkpoint_uri": None}, "--checkpoint-uri"),
        ({"checkpoint_uri": "file:///data/ckpt"}, "--checkpoint-uri"),
        ({"checkpoint_uri": "s3:/bucket"}, "--checkpoint-uri"),
        ({"checkpoint_uri": "s3:bucket/p"}, "--checkpoint-uri"),
        ({"checkpoint_uri": "s3://Bad_Bucket/p"}, "--checkpoint-uri"),
        ({"checkpoint_uri": "gs://bucket/p"}, "--checkpoint-uri"),
        ({"checkpoint_uri": "file://data/ckpt", "allow_local_store": True}, "--checkpoint-uri"),
        ({"log_group": "spot agent logs"}, "--log-group"),
        ({"log_group": "/a:b"}, "--log-group"),
    ],
)
def test_refuses_what_batch_or_the_agent_cannot_use(changes: dict[str, Any], setting: str) -> None:
    fields: dict[str, Any] = {"name": "t", "image": "img", "checkpoint_uri": URI, **changes}
    with pytest.raises(ConfigError) as err:
        build_job_definition(JobDefinitionSpec(**fields))
    assert err.value.setting == setting


def test_cli_prints_a_valid_request(tmp_path: Path) -> None:
    out = cli(
        tmp_path,
        "batch",
        "job-definition",
        "--name",
        "train",
        "--image",
        "img:1",
        "--vcpus",
        "2",
        "--memory",
        "4096",
        "--timeout",
        "2d",
        "--stop-timeout",
        "2m",
        "--checkpoint-uri",
        "s3://bucket/p",
    )
    assert out.returncode == 0, out.stderr
    req = json.loads(out.stdout)
    assert_valid("RegisterJobDefinition", req)
    assert req["timeout"] == {"attemptDurationSeconds": 172800}
    env = {e["name"]: e["value"] for e in req["containerProperties"]["environment"]}
    assert env["SPOT_AGENT_GRACE_PERIOD"] == "120s"


@pytest.mark.parametrize(
    "changes", [{"checkpoint_uri": None}, {"checkpoint_uri": "file:///mnt/efs/ckpt"}]
)
def test_a_local_store_only_when_told(changes: dict[str, Any]) -> None:
    spec = JobDefinitionSpec("t", "img", allow_local_store=True, **changes)
    req = build_job_definition(spec)
    env = {e["name"]: e["value"] for e in req["containerProperties"]["environment"]}
    assert env.get("SPOT_AGENT_CHECKPOINT_URI") == changes["checkpoint_uri"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "--checkpoint-uri: not given: a job on Batch runs each attempt in a new container"),
        (["--checkpoint-uri", "file:///x"], "--checkpoint-uri: 'file:///x' is a local store"),
        (["--checkpoint-uri", "s3:/bucket"], "--checkpoint-uri: 's3:/bucket' is not an S3 URI"),
        (
            ["--checkpoint-uri", "s3://b-1/p", "--log-group", "my logs"],
            "--log-group: 'my logs' is not a CloudWatch log group name",
        ),
    ],
)
def test_cli_refuses_a_definition_that_would_lose_work(
    tmp_path: Path, args: list[str], says: str
) -> None:
    out = cli(tmp_path, "batch", "job-definition", "--name", "t", "--image", "i", *args)
    assert out.returncode == 2, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"spot-agent: error: {says}"), lines[0]
    assert out.stdout == ""


def test_cli_allow_local_store(tmp_path: Path) -> None:
    out = cli(
        tmp_path, "batch", "job-definition", "--name", "t", "--image", "i", "--allow-local-store"
    )
    assert out.returncode == 0, out.stderr
    assert_valid("RegisterJobDefinition", json.loads(out.stdout))


def test_cli_usage_error_names_the_option(tmp_path: Path) -> None:
    out = cli(
        tmp_path, "batch", "job-definition", "--name", "t", "--image", "i", "--attempts", "20"
    )
    assert out.returncode == 2
    assert "--attempts" in out.stderr


# -- continuation request ---------------------------------------------------------------

QUEUE = "arn:aws:batch:us-east-1:123456789012:job-queue/spot"
JOBDEF = "arn:aws:batch:us-east-1:123456789012:job-definition/train:3"


def described(**changes: Any) -> dict[str, Any]:
    """A DescribeJobs answer for an array child, as Batch gives it."""
    job: dict[str, Any] = {
        "jobArn": "arn:aws:batch:us-east-1:123456789012:job/abc:3",
        "jobName": "train",
        "jobId": "abc:3",
        "jobQueue": QUEUE,
        "jobDefinition": JOBDEF,
        "status": "RUNNING",
        "parameters": {"epochs": "90"},
        "retryStrategy": {
            "attempts": 10,
            "evaluateOnExit": jobdef.retry_strategy()["evaluateOnExit"],
        },
        "timeout": {"attemptDurationSeconds": 86400},
        "attempts": [{"statusReason": "Host EC2 (instance i-0abc) terminated."}] * 9,
        "arrayProperties": {"index": 3},
        "container": {
            "image": "img:1",
            "command": ["python", "train.py", "--epochs", "90"],
            "environment": [
                {"name": "SPOT_AGENT_CHECKPOINT_URI", "value": "s3://bucket/p"},
                {"name": "AWS_BATCH_JOB_ID", "value": "abc:3"},
                {"name": "AWS_BATCH_JOB_ARRAY_INDEX", "value": "3"},
                {"name": "SPOT_AGENT_JOB_ID", "value": "stale"},
            ],
            "resourceRequirements": [
                {"type": "VCPU", "value": "4"},
                {"type": "MEMORY", "value": "8192"},
            ],
        },
        "createdAt": 1,
    }
    job.update(changes)
    return job


def test_continuation_keeps_definition_queue_parameters_and_overrides() -> None:
    req = build_continuation_request(described(), "abc:3", "abc:3")
    assert_valid("SubmitJob", req)
    assert (req["jobName"], req["jobQueue"], req["jobDefinition"]) == ("train", QUEUE, JOBDEF)
    assert req["parameters"] == {"epochs": "90"}
    assert req["retryStrategy"]["attempts"] == 10
    assert req["timeout"] == {"attemptDurationSeconds": 86400}
    co = req["containerOverrides"]
    assert co["command"] == ["python", "train.py", "--epochs", "90"]
    assert co["resourceRequirements"] == [
        {"type": "VCPU", "value": "4"},
        {"type": "MEMORY", "value": "8192"},
    ]
    env = {e["name"]: e["value"] for e in co["environment"]}
    assert env == {
        "SPOT_AGENT_CHECKPOINT_URI": "s3://bucket/p",
        "SPOT_AGENT_JOB_ID": "abc:3",  # the checkpoint identity, not the stale value
        "SPOT_AGENT_CONTINUES_FROM": "abc:3",
        "SPOT_AGENT_CONTINUED_BECAUSE": "last-attempt",
        "SPOT_AGENT_ARRAY_INDEX": "3",
    }
    assert "arrayProperties" not in req and "dependsOn" not in req


def test_a_continuation_of_a_continuation_keeps_the_original_identity() -> None:
    second = described(
        jobId="new1",
        arrayProperties=None,
        container={
            "command": ["python", "train.py"],
            "vcpus": 2,
            "memory": 4096,
            "environment": [
                {"name": "SPOT_AGENT_JOB_ID", "value": "abc:3"},
                {"name": "SPOT_AGENT_ARRAY_INDEX", "value": "3"},
                {"name": "SPOT_AGENT_CONTINUES_FROM", "value": "abc:3"},
                {"name": "SPOT_AGENT_CONTINUED_BECAUSE", "value": "last-attempt"},
            ],
        },
    )
    req = build_continuation_request(second, "abc:3", "new1", "interruption-budget", "od-q")
    assert req["jobQueue"] == "od-q"
    assert_valid("SubmitJob", req)
    env = {e["name"]: e["value"] for e in req["containerOverrides"]["environment"]}
    assert env == {
        "SPOT_AGENT_JOB_ID": "abc:3",
        "SPOT_AGENT_CONTINUES_FROM": "new1",
        "SPOT_AGENT_CONTINUED_BECAUSE": "interruption-budget",
        "SPOT_AGENT_ARRAY_INDEX": "3",
    }
    assert req["containerOverrides"]["resourceRequirements"] == [
        {"type": "VCPU", "value": "2"},
        {"type": "MEMORY", "value": "4096"},
    ]


# -- when the agent continues -----------------------------------------------------------


class FakeBatch:
    def __init__(self, job: dict[str, Any], fail: Exception | None = None) -> None:
        self.job = job
        self.fail = fail
        self.submitted: list[dict[str, Any]] = []

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        if self.fail:
            raise self.fail
        return {"jobs": [self.job] if jobs == [self.job["jobId"]] else []}

    def describe_job_definitions(self, jobDefinitions: list[str]) -> dict[str, Any]:
        return {"jobDefinitions": [{"retryStrategy": {"attempts": 4}}]}

    def submit_job(self, **request: Any) -> dict[str, Any]:
        assert_valid("SubmitJob", request)
        self.submitted.append(request)
        return {"jobId": "next-1", "jobName": request["jobName"]}


def settings(tmp_path: Path, env: dict[str, str], *flags: str) -> Any:
    args = build_parser().parse_args(["run", *flags])
    base = {"XDG_STATE_HOME": str(tmp_path), "SPOT_AGENT_CONTINUE_JOBS": "true"}
    return load_settings(args, ["job"], {**base, **env})


def batch_env(attempt: int) -> dict[str, str]:
    return {"AWS_BATCH_JOB_ID": "abc:3", "AWS_BATCH_JOB_ATTEMPT": str(attempt)}


def test_continues_only_on_the_last_allowed_attempt(tmp_path: Path) -> None:
    client = FakeBatch(described())
    assert (
        continuation.continue_after_interruption(settings(tmp_path, batch_env(9)), client) is None
    )
    assert client.submitted == []
    s = settings(tmp_path, batch_env(10))
    assert continuation.continue_after_interruption(s, client) == "next-1"
    env = {e["name"]: e["value"] for e in client.submitted[0]["containerOverrides"]["environment"]}
    assert env["SPOT_AGENT_JOB_ID"] == "abc:3"


def test_attempts_come_from_the_job_definition_when_the_job_has_none(tmp_path: Path) -> None:
    client = FakeBatch(described(retryStrategy=None))
    s = settings(tmp_path, batch_env(4))
    assert continuation.continue_after_interruption(s, client) == "next-1"


def test_off_by_default_and_outside_batch(tmp_path: Path) -> None:
    client = FakeBatch(described())
    off = settings(tmp_path, {**batch_env(10), "SPOT_AGENT_CONTINUE_JOBS": ""})
    assert not off.continue_jobs
    assert continuation.continue_after_interruption(off, client) is None
    assert continuation.continue_after_interruption(settings(tmp_path, {}), client) is None
    assert client.submitted == []


def test_a_job_terminated_through_batch_is_not_continued(tmp_path: Path) -> None:
    client = FakeBatch(described(isTerminated=True))
    assert (
        continuation.continue_after_interruption(settings(tmp_path, batch_env(10)), client) is None
    )
    assert client.submitted == []


def test_a_failure_is_logged_never_raised(tmp_path: Path) -> None:
    from agent import logs

    saved = structlog.get_config()
    out = io.StringIO()
    logs.configure(out, json=True)
    try:
        client = FakeBatch(described(), fail=RuntimeError("AccessDenied: batch:DescribeJobs"))
        s = settings(tmp_path, batch_env(10))
        assert continuation.continue_after_interruption(s, client) is None
    finally:
        structlog.configure(**saved)
    event = json.loads(out.getvalue().splitlines()[-1])
    assert event["event"] == "batch.continuation_failed"
    assert "AccessDenied" in event["error"]
    assert "SPOT_AGENT_JOB_ID=abc:3" in event["action"]


# -- settings ---------------------------------------------------------------------------


def test_settings_read_batch_identity(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        {**batch_env(2), "AWS_BATCH_JQ_NAME": "spot-q", "AWS_BATCH_CE_NAME": "spot-ce"},
    )
    assert (s.job_id, s.job_id_source, s.batch_job_id) == ("abc:3", "AWS_BATCH_JOB_ID", "abc:3")
    assert (s.batch_attempt, s.batch_job_queue, s.batch_compute_environment) == (
        2,
        "spot-q",
        "spot-ce",
    )


def test_continue_flag_and_environment(tmp_path: Path) -> None:
    args = build_parser().parse_args(["run", "--continue-after-last-attempt"])
    assert load_settings(args, ["job"], {"XDG_STATE_HOME": str(tmp_path)}).continue_jobs
    no_flag = argparse.Namespace()
    assert not load_settings(no_flag, ["job"], {"XDG_STATE_HOME": str(tmp_path)}).continue_jobs
    with pytest.raises(ConfigError, match="SPOT_AGENT_CONTINUE_JOBS"):
        settings(tmp_path, {"SPOT_AGENT_CONTINUE_JOBS": "maybe"})


def test_array_children_have_their_own_checkpoint_prefix(tmp_path: Path) -> None:
    ids = [settings(tmp_path, {"AWS_BATCH_JOB_ID": f"4f1e-a9:{i}"}).job_id for i in (0, 1)]
    assert ids == ["4f1e-a9:0", "4f1e-a9:1"]
    store = open_store((tmp_path / "store").as_uri())
    prefixes = [JobStore(store, job_id).manifest_key(1) for job_id in ids]
    assert prefixes == [
        "4f1e-a9:0/manifests/0000000001.json",
        "4f1e-a9:1/manifests/0000000001.json",
    ]


def test_a_continued_array_child_gets_its_index_back(tmp_path: Path) -> None:
    s = settings(tmp_path, {"AWS_BATCH_JOB_ID": "new1", "SPOT_AGENT_ARRAY_INDEX": "3"})
    assert s.child_environ["AWS_BATCH_JOB_ARRAY_INDEX"] == "3"
    real = settings(
        tmp_path, {"AWS_BATCH_JOB_ARRAY_INDEX": "5", "SPOT_AGENT_ARRAY_INDEX": "3"}
    ).child_environ
    assert real["AWS_BATCH_JOB_ARRAY_INDEX"] == "5"


def test_fallback_settings_go_together_and_count_from_one(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}

    def load(*argv: str, environ: dict[str, str] | None = None) -> Any:
        args = build_parser().parse_args(["run", *argv])
        return load_settings(args, ["job"], {**env, **(environ or {})})

    s = load("--fallback-queue", "train-on-demand", "--fallback-after", "3")
    assert (s.fallback_queue, s.fallback_after) == ("train-on-demand", 3)
    arn = "arn:aws:batch:us-east-1:123456789012:job-queue/od"
    from_env = load(environ={"SPOT_AGENT_FALLBACK_QUEUE": arn, "SPOT_AGENT_FALLBACK_AFTER": "1"})
    assert (from_env.fallback_queue, from_env.fallback_after) == (arn, 1)
    with pytest.raises(ConfigError, match=r"--fallback-after .*give both or neither"):
        load("--fallback-queue", "q")
    with pytest.raises(ConfigError, match=r"--fallback-queue .*give both or neither"):
        load("--fallback-after", "2")
    with pytest.raises(ConfigError, match="at least 1"):
        load("--fallback-queue", "q", "--fallback-after", "0")
    with pytest.raises(ConfigError, match="not a job queue"):
        load("--fallback-queue", "two words", "--fallback-after", "2")
    spec = JobDefinitionSpec("t", "i", checkpoint_uri="s3://bucket/p", fallback_queue="q")
    with pytest.raises(ConfigError, match="--fallback-after"):
        build_job_definition(spec)


def test_both_submissions_use_the_region_botocore_does_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch sets AWS_REGION; botocore reads only AWS_DEFAULT_REGION. The fallback's client
    was built without it (NoRegionError, logged, and no fallback); both now take the
    region the store resolved. Building a client makes no request."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", "http://127.0.0.1:9")
    s = settings(tmp_path, {**batch_env(10), "AWS_REGION": "eu-west-3"})
    client = continuation._client(s)
    assert client.meta.region_name == "eu-west-3"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
