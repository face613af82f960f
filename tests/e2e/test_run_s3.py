"""The whole entrypoint with an S3 store (SeaweedFS on 127.0.0.1): what only S3 can refuse.

Interrupting and resuming runs against every kind of store in test_run.py."""

from __future__ import annotations

from pathlib import Path

from tests.agentproc import run_agent
from tests.servers import SeaweedS3
from tests.stores import s3_agent_env


def test_missing_bucket_exits_69_naming_it(tmp_path: Path, seaweedfs: SeaweedS3) -> None:
    env = s3_agent_env(tmp_path, seaweedfs, "s3://no-such-bucket-for-spot-agent/x")
    r = run_agent(tmp_path, ["--job-id", "nb"], ["true"], env=env)
    assert r.proc.returncode == 69
    error = r.event("store.unavailable")["error"]
    assert "no-such-bucket-for-spot-agent" in error and "\n" not in error


def test_read_only_credentials_fail_at_start_naming_the_action(
    tmp_path: Path, seaweedfs: SeaweedS3, s3_bucket: tuple[str, str]
) -> None:
    env = s3_agent_env(tmp_path, seaweedfs, f"s3://{s3_bucket[1]}/ro", reader=True)
    r = run_agent(tmp_path, ["--job-id", "ro"], ["true"], env=env)
    assert r.proc.returncode == 69
    error = r.event("store.unavailable")["error"]
    assert "access denied" in error.lower() and "PutObject" in error
