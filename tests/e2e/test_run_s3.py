"""The whole entrypoint with an S3 store (SeaweedFS on 127.0.0.1): interrupt, resume, errors."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

from tests.agentproc import EXAMPLE, agent_env, cli, run_agent, start_agent
from tests.servers import SeaweedS3

PY = sys.executable


def s3_agent_env(tmp: Path, weed: SeaweedS3, uri: str, *, reader: bool = False) -> dict[str, str]:
    return agent_env(
        tmp,
        {
            "SPOT_AGENT_CHECKPOINT_URI": uri,
            "AWS_ENDPOINT_URL_S3": weed.endpoint,
            "AWS_ACCESS_KEY_ID": weed.reader_access_key if reader else weed.access_key,
            "AWS_SECRET_ACCESS_KEY": weed.reader_secret_key if reader else weed.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        },
    )


def test_example_interrupted_and_resumed_through_s3(
    tmp_path: Path, seaweedfs: SeaweedS3, s3_bucket: tuple[str, str]
) -> None:
    uri = f"s3://{s3_bucket[1]}/jobs"
    env = s3_agent_env(tmp_path, seaweedfs, uri)
    cmd = [PY, str(EXAMPLE), "--limit", "1e8", "--segment", "1e6", "--segment-delay", "0.03"]
    workdir = tmp_path / "state" / "spot-agent" / "jobs" / "s3job" / "checkpoint"
    first = start_agent(tmp_path, ["--job-id", "s3job", "--sync-interval", "0.5s"], cmd, env=env)
    first.wait_for(
        lambda: (
            (workdir / "state.json").exists()
            and json.loads((workdir / "state.json").read_text())["next"] >= 20_000_000
        ),
        what="a fifth of the work",
    )
    first.signal(signal.SIGTERM)
    assert first.wait(60) == 75, first.stderr
    saved = json.loads((workdir / "state.json").read_text())
    periodic = [e for e in first.events() if e["event"] == "sync.committed"]
    assert periodic, "periodic syncs to S3 while the job ran"

    shutil.rmtree(workdir)  # the next attempt runs on a fresh machine
    second = run_agent(tmp_path, ["--job-id", "s3job"], cmd, env=env)
    assert second.proc.returncode == 0, second.stderr
    assert f"resuming at {saved['next']:,}" in second.stdout
    assert "primes below 100,000,000: 5,761,455" in second.stdout
    restored = second.event("restore.done")
    assert restored["files_downloaded"] >= 1 and restored["bytes_downloaded"] > 0

    listing = cli(tmp_path, "checkpoints", "list", "--job-id", "s3job", "--json", env=env)
    rows = json.loads(listing.stdout)
    assert rows[-1]["reason"] == "exit" and rows[-1]["progress"]["done"] == "100.0%"


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
