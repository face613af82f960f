"""Every AWS misconfiguration is one line on stderr and exit 2, never a traceback, from
``run`` and from ``checkpoints list`` alike; none of them sends a request anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agentproc import agent_env, cli, run_agent

EXIT_USAGE = 2

CASES = [
    pytest.param(
        {"AWS_ENDPOINT_URL": "localhost:9000"}, "AWS_ENDPOINT_URL: ", id="endpoint-no-scheme"
    ),
    pytest.param(
        {"AWS_ENDPOINT_URL_S3": "127.0.0.1:9000"},
        "AWS_ENDPOINT_URL_S3: ",
        id="s3-endpoint-no-scheme",
    ),
    pytest.param({"AWS_PROFILE": "no-such-profile"}, "AWS_PROFILE: ", id="unknown-profile"),
    pytest.param({"AWS_DEFAULT_REGION": "us_east_1!"}, "AWS_DEFAULT_REGION: ", id="bad-region"),
    pytest.param(
        {"AWS_DEFAULT_REGION": "US-EAST-1"}, "AWS_DEFAULT_REGION: ", id="region-in-capitals"
    ),
    pytest.param(
        {"AWS_PROFILE": "p", "_CONFIG": "[profile p]\nregion = us_east_1!\n"},
        "AWS SDK configuration: ",
        id="bad-region-in-profile",
    ),
    pytest.param(
        {"AWS_PROFILE": "p", "_CONFIG": "[profile p]\nregion = us-east-1\nendpoint_url = nohost\n"},
        "AWS SDK configuration: ",
        id="endpoint-in-profile-no-scheme",
    ),
]


def _env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    extra = dict(extra)
    config = tmp_path / "aws-config"
    config.write_text(extra.pop("_CONFIG", ""))
    env = agent_env(
        tmp_path,
        {
            "SPOT_AGENT_CHECKPOINT_URI": "s3://some-bucket/ckpt",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        },
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        env.pop(name, None)
    if "AWS_PROFILE" in extra:
        env.pop("AWS_DEFAULT_REGION")  # the profile's region is the one in question
    env.update(extra)
    return env


def _one_line(stderr: str, starts: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"spot-agent: error: {starts}"), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("extra", "starts"), CASES)
def test_run(tmp_path: Path, extra: dict[str, str], starts: str) -> None:
    r = run_agent(tmp_path, ["--job-id", "misconf"], ["true"], env=_env(tmp_path, extra))
    assert r.proc.returncode == EXIT_USAGE, r.stderr
    _one_line(r.stderr, starts)


@pytest.mark.parametrize(("extra", "starts"), CASES)
def test_checkpoints_list(tmp_path: Path, extra: dict[str, str], starts: str) -> None:
    r = cli(tmp_path, "checkpoints", "list", "--job-id", "misconf", env=_env(tmp_path, extra))
    assert r.returncode == EXIT_USAGE, r.stderr
    _one_line(r.stderr, starts)


def test_a_local_store_ignores_the_sdk_settings(tmp_path: Path) -> None:
    env = _env(tmp_path, {"AWS_PROFILE": "no-such-profile"})
    env["SPOT_AGENT_CHECKPOINT_URI"] = (tmp_path / "store").as_uri()
    r = run_agent(tmp_path, ["--job-id", "local"], ["true"], env=env)
    assert r.proc.returncode == 0, r.stderr


@pytest.mark.parametrize(("extra", "starts"), CASES[:5])
def test_batch_register(tmp_path: Path, extra: dict[str, str], starts: str) -> None:
    r = cli(
        tmp_path,
        *("batch", "job-definition", "--name", "t", "--image", "i"),
        *("--checkpoint-uri", "s3://some-bucket/ckpt", "--register"),
        env=_env(tmp_path, extra),
    )
    assert r.returncode == EXIT_USAGE, r.stderr
    _one_line(r.stderr, starts)
