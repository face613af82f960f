"""The S3 settings are read and checked in agent/config, shown in --help, and reach the
store as arguments."""

from __future__ import annotations

import argparse

import pytest

from agent.cli import build_parser
from agent.config import ConfigError, S3Settings, load_s3_settings, load_store_settings


def ns(**values: str) -> argparse.Namespace:
    return argparse.Namespace(**values)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, S3Settings("default", None, "auto")),
        ({"SPOT_AGENT_SSE": "none"}, S3Settings("default", None, "auto")),  # the old spelling
        ({"SPOT_AGENT_SSE": "aes256"}, S3Settings("AES256", None, "auto")),
        (
            {"SPOT_AGENT_SSE": "aws:kms", "SPOT_AGENT_SSE_KMS_KEY_ID": "alias/k"},
            S3Settings("aws:kms", "alias/k", "auto"),
        ),
        ({"SPOT_AGENT_S3_ADDRESSING_STYLE": "path"}, S3Settings("default", None, "path")),
    ],
)
def test_from_the_environment(environ: dict[str, str], expected: S3Settings) -> None:
    assert load_s3_settings(ns(), environ) == expected


def test_options_win_over_the_environment() -> None:
    got = load_s3_settings(ns(sse="AES256"), {"SPOT_AGENT_SSE": "aws:kms"})
    assert got.sse == "AES256"


def test_store_options_are_what_open_store_takes() -> None:
    assert S3Settings().store_options() == {
        "region": None,  # AWS_REGION when set: botocore does not read it
        "sse": None,
        "kms_key_id": None,
        "addressing_style": None,
    }
    assert S3Settings("aws:kms", "k", "virtual", "eu-west-3").store_options() == {
        "region": "eu-west-3",
        "sse": "aws:kms",
        "kms_key_id": "k",
        "addressing_style": "virtual",
    }


@pytest.mark.parametrize("sse", [None, "AES256", "default"])
def test_a_kms_key_without_aws_kms_is_an_error(sse: str | None) -> None:
    environ = {"SPOT_AGENT_SSE_KMS_KEY_ID": "alias/k"}
    if sse:
        environ["SPOT_AGENT_SSE"] = sse
    with pytest.raises(ConfigError) as error:
        load_s3_settings(ns(), environ)
    assert error.value.setting == "--sse-kms-key-id (SPOT_AGENT_SSE_KMS_KEY_ID)"
    assert "--sse aws:kms" in str(error.value)


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^--sse \(SPOT_AGENT_SSE\): expected one of"):
        load_s3_settings(ns(), {"SPOT_AGENT_SSE": "AES512"})
    with pytest.raises(ConfigError, match=r"^--s3-addressing-style"):
        load_s3_settings(ns(s3_addressing_style="sideways"), {})


def test_store_settings_carry_them() -> None:
    ss = load_store_settings(ns(), {"SPOT_AGENT_SSE": "AES256", "HOME": "/nonexistent"})
    assert ss.s3.sse == "AES256"


@pytest.mark.parametrize(
    "argv",
    [["run"], ["checkpoints", "list"], ["checkpoints", "jobs"], ["checkpoints", "gc"], ["doctor"]],
)
def test_shown_in_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    shown = capsys.readouterr().out
    for flag, env in (
        ("--sse", "SPOT_AGENT_SSE"),
        ("--sse-kms-key-id", "SPOT_AGENT_SSE_KMS_KEY_ID"),
        ("--s3-addressing-style", "SPOT_AGENT_S3_ADDRESSING_STYLE"),
    ):
        assert flag in shown and env in shown, (flag, argv)


def test_checkpoint_reads_no_s3_setting_from_the_environment() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "checkpoint"
    reads = re.compile(r"environ\S*[\[(]\s*[\"']SPOT_AGENT_(SSE|S3)")
    for path in root.glob("*.py"):
        assert not reads.search(path.read_text()), path
