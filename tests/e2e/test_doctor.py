"""``spot-agent doctor`` against real local servers: SeaweedFS (the store), moto_server
(CloudWatch Logs), imds-mock (the metadata service), all on 127.0.0.1."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from agent.imds_mock import ImdsMock
from tests import servers
from tests.agentproc import agent_env, cli, run_agent


@pytest.fixture
def imds() -> Iterator[ImdsMock]:
    with ImdsMock() as mock:
        yield mock


def doctor_env(tmp: Path, endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    return agent_env(
        tmp,
        {
            "SPOT_AGENT_CHECKPOINT_URI": f"s3://{bucket}/ckpt",
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": servers.ADMIN_KEY,
            "AWS_SECRET_ACCESS_KEY": servers.ADMIN_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-credentials"),
            **extra,
        },
    )


def checks(stdout: str) -> dict[str, tuple[str, str]]:
    """{check name: (status, rest of the line)}; every line but the last is one check."""
    lines = stdout.strip().splitlines()
    assert lines[-1].startswith("doctor: "), stdout
    found = {}
    for line in lines[:-1]:
        m = re.fullmatch(r"(ok|warn|FAIL|skip) +([^:]+(?::\S+)?): (.*)", line)
        assert m, line
        name = m.group(2).split(" ")[0] if m.group(2).startswith("store ") else m.group(2)
        found[name if not name.startswith("log group") else "log group"] = (m[1], m[3])
    return found


def test_everything_in_order(
    tmp_path: Path, s3_bucket: tuple[str, str], moto_server: str, imds: ImdsMock
) -> None:
    endpoint, bucket = s3_bucket
    env = doctor_env(
        tmp_path,
        endpoint,
        bucket,
        AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=moto_server,
        AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url,
        SPOT_AGENT_IMDS="on",
    )
    # the job already has a checkpoint: the disk check compares with its size
    r = run_agent(tmp_path, ["--job-id", "doc"], [sys.executable, "-c", "pass"], env=env)
    assert r.proc.returncode == 0, r.stderr
    out = cli(tmp_path, "doctor", "--job-id", "doc", "--log-group", "/spot/doc", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    found = checks(out.stdout)
    assert {name: status for name, (status, _) in found.items()} == {
        "credentials": "ok",
        "store": "ok",
        "conditional writes": "ok",
        "clock": "ok",
        "disk": "ok",
        "metadata service": "ok",
        "log group": "ok",
    }, out.stdout
    assert "encryption asked: no header (the bucket's default), applied: none" in found["store"][1]
    assert "the newest checkpoint (1)" in found["disk"][1]
    assert "instance i-" in found["metadata service"][1]
    assert "group created" in found["log group"][1]
    # the probe objects are gone: the store holds the job and nothing else
    jobs = json.loads(cli(tmp_path, "checkpoints", "jobs", "--json", env=env).stdout)
    assert [j["job_id"] for j in jobs] == ["doc"]
    logs = boto3.session.Session().client(
        "logs",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    streams = logs.describe_log_streams(logGroupName="/spot/doc")["logStreams"]
    assert [s["logStreamName"] for s in streams] == ["doc"]


def test_a_missing_bucket_fails(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, _ = s3_bucket
    env = doctor_env(tmp_path, endpoint, f"nope-{uuid.uuid4().hex[:8]}", SPOT_AGENT_IMDS="off")
    out = cli(tmp_path, "doctor", "--job-id", "x", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    found = checks(out.stdout)
    assert found["store"][0] == "FAIL"
    assert "no such bucket" in found["store"][1]
    assert out.stdout.strip().endswith("a launch with these settings would lose work")


def test_encryption_the_server_does_not_serve_fails_with_the_fix(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket  # SeaweedFS without a key-encryption key
    env = doctor_env(tmp_path, endpoint, bucket, SPOT_AGENT_IMDS="off", SPOT_AGENT_SSE="AES256")
    out = cli(tmp_path, "doctor", "--job-id", "x", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    status, text = checks(out.stdout)["store"]
    assert status == "FAIL"
    assert "fix: check that the bucket accepts --sse AES256, or leave --sse at default" in text


def test_explicit_encryption_is_reported_when_accepted(
    tmp_path: Path, seaweedfs_sse: servers.SeaweedS3
) -> None:
    bucket = f"doc-{uuid.uuid4().hex[:8]}"
    boto3.session.Session().client(
        "s3",
        endpoint_url=seaweedfs_sse.endpoint,
        aws_access_key_id=seaweedfs_sse.access_key,
        aws_secret_access_key=seaweedfs_sse.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    ).create_bucket(Bucket=bucket)
    env = doctor_env(
        tmp_path, seaweedfs_sse.endpoint, bucket, SPOT_AGENT_IMDS="off", SPOT_AGENT_SSE="AES256"
    )
    out = cli(tmp_path, "doctor", "--job-id", "x", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "encryption asked: AES256, applied: AES256" in checks(out.stdout)["store"][1]


def test_no_credentials_fail(tmp_path: Path, s3_bucket: tuple[str, str]) -> None:
    endpoint, bucket = s3_bucket
    env = doctor_env(tmp_path, endpoint, bucket, SPOT_AGENT_IMDS="off")
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    out = cli(tmp_path, "doctor", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    found = checks(out.stdout)
    assert found["credentials"] == (
        "FAIL",
        "no AWS credentials found; fix: give the job a role, or set AWS_PROFILE, or "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    )
    assert found["store"][0] == "FAIL"


@pytest.mark.parametrize(("mode", "status", "code"), [("on", "FAIL", 1), ("auto", "warn", 0)])
def test_an_unreachable_metadata_service(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
    closed_endpoint: str,
    mode: str,
    status: str,
    code: int,
) -> None:
    endpoint, bucket = s3_bucket
    env = doctor_env(
        tmp_path,
        endpoint,
        bucket,
        SPOT_AGENT_IMDS=mode,
        AWS_EC2_METADATA_SERVICE_ENDPOINT=closed_endpoint,
    )
    out = cli(tmp_path, "doctor", "--job-id", "x", env=env)
    assert out.returncode == code, out.stdout + out.stderr
    got, text = checks(out.stdout)["metadata service"]
    assert got == status
    assert "HttpPutResponseHopLimit 2" in text


def test_a_posted_notice_is_a_warning(
    tmp_path: Path, s3_bucket: tuple[str, str], imds: ImdsMock
) -> None:
    endpoint, bucket = s3_bucket
    imds.post_interruption("terminate", in_seconds=120)
    env = doctor_env(
        tmp_path,
        endpoint,
        bucket,
        AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url,
        SPOT_AGENT_IMDS="auto",
    )
    out = cli(tmp_path, "doctor", "--job-id", "x", env=env)
    assert out.returncode == 0, out.stdout
    status, text = checks(out.stdout)["metadata service"]
    assert status == "warn" and "an interruption notice is posted" in text
    assert cli(tmp_path, "doctor", "--job-id", "x", "--strict", env=env).returncode == 1


def test_a_configuration_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = agent_env(tmp_path, {"SPOT_AGENT_SSE_KMS_KEY_ID": "alias/k"})
    out = cli(tmp_path, "doctor", env=env)
    assert out.returncode == 2
    assert out.stderr.startswith("spot-agent: error: --sse-kms-key-id (SPOT_AGENT_SSE_KMS_KEY_ID):")
    assert len(out.stderr.strip().splitlines()) == 1
