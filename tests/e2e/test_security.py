"""Security properties of the whole entrypoint: no credentials in the logs, every object
written with the encryption asked for (none by default: the bucket's default applies),
private permissions on what the agent creates locally."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.agentproc import agent_env, run_agent, start_agent

PY = sys.executable
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


# -- no credentials in the logs --------------------------------------------------------------


def test_credentials_never_reach_the_logs(tmp_path: Path) -> None:
    env = agent_env(
        tmp_path,
        {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
            "DATABASE_PASSWORD": "correct-horse-battery",
        },
    )
    # The job fails its final checkpoint on purpose, so error events are logged too.
    job = py("""
        import os, sys
        os.mkfifo(os.path.join(os.environ["CHECKPOINT_DIR"], "pipe"))
        sys.exit(3)
    """)
    r = run_agent(
        tmp_path,
        ["--job-id", "sec"],
        [*job, "--password=hunter2", "--api-key", "k-9f8e7d", f"--aws-key={KEY_ID}"],
        env=env,
    )
    assert r.proc.returncode == 3, r.stdout + r.stderr
    everything = r.stdout + r.stderr
    for secret in (
        SECRET,
        KEY_ID,
        "FwoGZXIvYXdzEXAMPLESESSIONTOKEN",
        "correct-horse-battery",
        "hunter2",
        "k-9f8e7d",
    ):
        assert secret not in everything, f"{secret!r} leaked into the logs"
    command = r.event("agent.start")["command"]
    assert command[-4:] == [
        "--password=[REDACTED]",
        "--api-key",
        "[REDACTED]",
        "--aws-key=[REDACTED]",
    ]
    assert r.event("sync.file_skipped")["path"] == "pipe"


def test_a_presigned_url_in_the_command_is_logged_without_its_signature(tmp_path: Path) -> None:
    """Issue 22, item 8: the job's argument was logged with its X-Amz-Signature in clear."""
    url = (
        "https://alice@bucket.example/data?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261207%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Signature=0123456789abcdef0123456789abcdef&X-Amz-SignedHeaders=host"
    )
    r = run_agent(tmp_path, ["--job-id", "presigned"], [PY, "-c", "print(1)", url])
    assert r.proc.returncode == 0, r.stdout + r.stderr
    for secret in ("0123456789abcdef", "AKIAIOSFODNN7EXAMPLE", "alice"):
        assert secret not in r.stdout + r.stderr, f"{secret!r} leaked into the logs"
    logged = r.event("agent.start")["command"][-1]
    assert logged.startswith("https://[REDACTED]@bucket.example/data?"), logged
    assert "X-Amz-Signature=[REDACTED]&X-Amz-SignedHeaders=host" in logged, logged


# -- server-side encryption of every object the agent writes ---------------------------------


def test_a_kms_key_without_aws_kms_is_a_configuration_error(
    tmp_path: Path, moto_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = moto_bucket
    for extra in (
        {"SPOT_AGENT_SSE_KMS_KEY_ID": "alias/k"},
        {"SPOT_AGENT_SSE_KMS_KEY_ID": "alias/k", "SPOT_AGENT_SSE": "AES256"},
    ):
        env = _moto_env(tmp_path, endpoint, bucket, **extra)
        r = run_agent(tmp_path, ["--job-id", "kms"], ["true"], env=env)
        assert r.proc.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith(
            "spot-agent: error: --sse-kms-key-id (SPOT_AGENT_SSE_KMS_KEY_ID): "
        ), lines
        assert "--sse aws:kms" in lines[0]


def moto_client(endpoint: str) -> object:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def moto_bucket(moto_server: str) -> Iterator[tuple[str, str]]:
    bucket = f"sse-{uuid.uuid4().hex[:12]}"
    client = moto_client(moto_server)
    client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    yield moto_server, bucket


def _moto_env(tmp: Path, endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    return agent_env(
        tmp,
        {
            "SPOT_AGENT_CHECKPOINT_URI": f"s3://{bucket}/ckpt",
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
            **extra,
        },
    )


SSE_JOB = """
    import checkpoint, os
    n = checkpoint.load_json("n.json", default=0) + 1
    checkpoint.save_json("n.json", n)
    checkpoint.save_bytes(f"small{n}.bin", os.urandom(50_000))  # packed
    checkpoint.save_bytes(f"big{n}.bin", os.urandom(1_500_000))  # a blob of its own
    assert checkpoint.request_sync(wait=30)
    checkpoint.save_bytes("late.bin", os.urandom(1000))
"""


@pytest.mark.parametrize(
    "extra, expected",
    [
        # No header: the bucket's default encryption applies (SSE-S3 at least, on AWS).
        ({}, {"ServerSideEncryption": None, "SSEKMSKeyId": None}),
        ({"SPOT_AGENT_SSE": "AES256"}, {"ServerSideEncryption": "AES256", "SSEKMSKeyId": None}),
        (
            {
                "SPOT_AGENT_SSE": "aws:kms",
                "SPOT_AGENT_SSE_KMS_KEY_ID": "alias/spot-agent-checkpoints",
            },
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/spot-agent-checkpoints"},
        ),
    ],
    ids=["bucket-default", "sse-s3", "sse-kms"],
)
def test_every_object_the_agent_writes_has_the_encryption_asked_for(
    tmp_path: Path, moto_bucket: tuple[str, str], extra: dict[str, str], expected: dict[str, str]
) -> None:
    endpoint, bucket = moto_bucket
    env = _moto_env(tmp_path, endpoint, bucket, **extra)
    for _ in range(2):  # two attempts: a restore, a second attempt record, more commits
        r = run_agent(tmp_path, ["--job-id", "enc"], py(SSE_JOB), env=env)
        assert r.proc.returncode == 0, r.stdout + r.stderr
    client = moto_client(endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]  # type: ignore[attr-defined]
    kinds = {key.split("/")[2] for key in keys}
    assert kinds == {"blobs", "packs", "manifests", "attempts", "timeline"}, keys
    assert sum(key.startswith("ckpt/enc/attempts/") for key in keys) == 2
    assert sum(key.startswith("ckpt/enc/manifests/") for key in keys) == 4
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)  # type: ignore[attr-defined]
        got = {k: head.get(k) for k in expected}
        assert got == expected, f"{key}: {got}"


# -- private permissions on what the agent creates -------------------------------------------


def test_agent_creates_private_dirs_and_files_whatever_the_umask(tmp_path: Path) -> None:
    job = py("""
        import checkpoint, json, os, signal, stat, sys, time
        def mode(p):
            return oct(stat.S_IMODE(os.stat(p).st_mode))
        def stop(*_):
            seen["notice_file"] = mode(os.environ["SPOT_AGENT_NOTICE_FILE"])
            print("MODES " + json.dumps(seen), flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        ckdir = os.environ["CHECKPOINT_DIR"]
        status = os.environ["SPOT_AGENT_STATUS_FILE"]
        seen = {
            "checkpoint_dir": mode(ckdir),
            "jobs_dir": mode(os.path.dirname(ckdir)),
            "runtime_dir": mode(os.path.dirname(status)),
            "status_file": mode(status),
        }
        checkpoint.save_json("s.json", 1)
        assert checkpoint.request_sync(wait=20)
        seen["status_file_after_sync"] = mode(status)
        print("ready", flush=True)
        time.sleep(60)
    """)
    old = os.umask(0)  # inherited by the agent: it must not rely on a sane umask
    try:
        r = start_agent(tmp_path, ["--job-id", "perm"], job)
    finally:
        os.umask(old)
    r.wait_for(lambda: r.has_line("ready"), what="the job to look at its files")
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 75, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("MODES "))
    modes = json.loads(line[len("MODES ") :])
    assert modes == {
        "checkpoint_dir": "0o700",
        "jobs_dir": "0o700",
        "runtime_dir": "0o700",
        "status_file": "0o600",
        "status_file_after_sync": "0o600",
        "notice_file": "0o600",
    }
    state = tmp_path / "state" / "spot-agent"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    store = tmp_path / "store"
    for path in [store, *store.rglob("*")]:
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_an_existing_checkpoint_dir_keeps_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    r = run_agent(tmp_path, ["--job-id", "keep", "--checkpoint-dir", str(shared)], ["true"])
    assert r.proc.returncode == 0
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
