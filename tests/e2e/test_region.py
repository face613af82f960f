"""Where the region comes from: AWS_REGION, then AWS_DEFAULT_REGION, then the profile's
config (the SDKs' order), for ``doctor`` and for the clients the agent makes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from agent.config import load_s3_settings
from agent.logs import cloudwatch
from checkpoint.engine.store.uri import open_store
from tests.agentproc import cli
from tests.conftest import isolate_aws_environment
from tests.e2e.test_doctor import checks, doctor_env

ORDER = [
    # (AWS_REGION, AWS_DEFAULT_REGION, the profile's region) -> (region, named source)
    (("eu-west-3", None, None), ("eu-west-3", "AWS_REGION")),
    (("eu-west-3", "us-east-2", "ap-south-1"), ("eu-west-3", "AWS_REGION")),
    ((None, "us-east-2", "ap-south-1"), ("us-east-2", "AWS_DEFAULT_REGION")),
    ((None, None, "ap-south-1"), ("ap-south-1", "the profile's config")),
]


def _region_env(
    tmp: Path, region: str | None, default: str | None, profile: str | None
) -> dict[str, str]:
    config = tmp / "aws-config"
    config.write_text(f"[default]\nregion = {profile}\n" if profile else "")
    env = {"AWS_CONFIG_FILE": str(config)}
    if region:
        env["AWS_REGION"] = region
    if default:
        env["AWS_DEFAULT_REGION"] = default
    return env


@pytest.mark.parametrize(("given", "expected"), ORDER)
def test_doctor_finds_the_region_in_the_sdks_order(
    tmp_path: Path,
    s3_bucket: tuple[str, str],
    given: tuple[str | None, str | None, str | None],
    expected: tuple[str, str],
) -> None:
    endpoint, bucket = s3_bucket
    env = doctor_env(tmp_path, endpoint, bucket)
    del env["AWS_DEFAULT_REGION"]
    env.update(_region_env(tmp_path, *given))
    out = cli(tmp_path, "doctor", "--job-id", "region", env=env)
    status, detail = checks(out.stdout)["credentials"]
    region, source = expected
    assert (status, detail.split("; ")[1]) == ("ok", f"region {region} ({source})"), out.stdout


def test_doctor_without_any_region_names_all_three_places(
    tmp_path: Path, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    env = doctor_env(tmp_path, endpoint, bucket)
    del env["AWS_DEFAULT_REGION"]
    env.update(_region_env(tmp_path, None, None, None))
    out = cli(tmp_path, "doctor", "--job-id", "region", env=env)
    status, detail = checks(out.stdout)["credentials"]
    assert status == "warn"
    assert "no region is set (not in AWS_REGION, AWS_DEFAULT_REGION or the profile's config)" in (
        detail
    )
    assert "fix: set AWS_REGION to the bucket's region" in detail


@pytest.mark.parametrize(("given", "expected"), ORDER)
def test_the_agents_clients_use_the_region_in_the_sdks_order(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    given: tuple[str | None, str | None, str | None],
    expected: tuple[str, str],
) -> None:
    """The clients the agent makes (no request is sent: loopback endpoints all the same)."""
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    for name, value in _region_env(tmp_path, *given).items():
        monkeypatch.setenv(name, value)
    s3 = load_s3_settings(argparse.Namespace(), os.environ)
    store = open_store("s3://region-test/p", **s3.store_options())
    try:
        client = store.client  # type: ignore[attr-defined]
        assert client.meta.endpoint_url == "http://127.0.0.1:9"
        assert client.meta.region_name == expected[0]
    finally:
        store.close()
    shipper = cloudwatch.open_logs("/spot/region", "s", s3.aws_region)
    assert shipper is not None
    try:
        assert shipper.client.meta.endpoint_url == "http://127.0.0.1:9"
        assert shipper.client.meta.region_name == expected[0]
    finally:
        shipper.close(1.0)
