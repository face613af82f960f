"""The command line imports only what the chosen command needs, and says the same either way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[2]

#: modules only other commands use: ``run`` must start its job without loading them
OTHER_COMMANDS = ["agent.batch", "agent.checkpoints_cli", "agent.doctor", "agent.imds_mock"]


def loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    modules: list[str] = json.loads(out.stdout.splitlines()[-1])
    return modules


def test_run_parses_without_the_other_commands_modules() -> None:
    loaded = loaded_after(
        "from agent.cli import build_parser\n"
        "build_parser(only='run').parse_args(['run', '--sync-interval', '5m'])"
    )
    assert [m for m in OTHER_COMMANDS if m in loaded] == []
    assert "boto3" not in loaded  # a file:// store needs no SDK; an S3 one opens it itself


def test_requests_waits_for_a_metadata_service_to_poll() -> None:
    """The IMDS client (requests, ~0.1 s of imports) is loaded only when there is one."""
    loaded = loaded_after("import agent.run, agent.checkpoints_cli, agent.doctor")
    assert "requests" not in loaded
    assert "agent.notices.client" not in loaded


def test_an_s3_store_opens_without_boto3() -> None:
    """botocore alone makes the client: boto3's transfer manager and resources stay out."""
    loaded = loaded_after(
        "import os\n"
        "os.environ.update(AWS_ENDPOINT_URL_S3='http://127.0.0.1:9', AWS_ACCESS_KEY_ID='k',\n"
        "    AWS_SECRET_ACCESS_KEY='s', AWS_DEFAULT_REGION='us-east-1')\n"
        "from checkpoint.engine.store.s3 import S3Store\n"
        "S3Store.from_uri('s3://bucket/job').close()"
    )
    assert "botocore.client" in loaded
    assert "boto3" not in loaded and "s3transfer" not in loaded


def test_the_full_parser_still_loads_every_command() -> None:
    loaded = loaded_after("from agent.cli import build_parser\nbuild_parser()")
    assert [m for m in OTHER_COMMANDS if m not in loaded] == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_mounted_alone_has_the_options_of_the_whole_parser(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    helps = []
    for only in (None, name):
        with pytest.raises(SystemExit):
            build_parser(only=only).parse_args([name, "--help"])
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1]
    assert "--help" in helps[0]


def test_the_top_level_help_lists_every_command_whatever_is_mounted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    helps = []
    for only in (None, "", "run"):
        with pytest.raises(SystemExit):
            build_parser(only=only).parse_args(["--help"])
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] == helps[2]
    assert all(f"    {name}" in helps[0] for name in COMMANDS)


def test_a_second_s3_store_does_not_parse_the_service_model_again() -> None:
    """The run opens two stores before its job starts (the claim's and its own): the
    second one's client reuses the first one's botocore data (about 50 ms of JSON)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\n"
            "os.environ.update(AWS_ENDPOINT_URL_S3='http://127.0.0.1:9', AWS_ACCESS_KEY_ID='k',\n"
            "    AWS_SECRET_ACCESS_KEY='s', AWS_DEFAULT_REGION='us-east-1')\n"
            "import botocore.loaders\n"
            "from checkpoint.engine.store.s3 import S3Store\n"
            "loads = []\n"
            "real = botocore.loaders.JSONFileLoader.load_file\n"
            "def counted(self, path):\n"
            "    loads.append(path)\n"
            "    return real(self, path)\n"
            "botocore.loaders.JSONFileLoader.load_file = counted\n"
            "S3Store.from_uri('s3://bucket/job').close()\n"
            "first = len(loads)\n"
            "S3Store.from_uri('s3://bucket/job', max_attempts=2, read_timeout=3).close()\n"
            "print(first, len(loads) - first)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    first, second = map(int, out.stdout.split())
    assert first > 0 and second == 0
