"""The log redaction processor: credentials never leave the process in an event."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from agent import logs
from agent.config import secret_values

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    logs.set_known_secrets(())
    logs.reset_static()
    structlog.configure(**saved)


def redact(**event: object) -> dict[str, object]:
    return logs.redact(None, "info", dict(event))


def test_access_key_ids_are_masked_anywhere() -> None:
    out = redact(error=f"denied for {KEY_ID} and ASIAY34FZKBOKMUTVV7A", nested={"k": [KEY_ID]})
    assert out == {
        "error": "denied for AKIA[REDACTED] and ASIA[REDACTED]",
        "nested": {"k": ["AKIA[REDACTED]"]},
    }


def test_fields_named_like_secrets_are_masked_but_codes_are_kept() -> None:
    out = redact(
        aws_secret_access_key="x" * 40,
        password="hunter2",
        session_token="IQoJb3JpZ2luX2VjE",
        credentials={"AccessKeyId": KEY_ID, "SecretAccessKey": "abc"},
        token_status=403,
        kind="token_timeout",
        event="imds_v1_fallback",
    )
    assert out["aws_secret_access_key"] == out["password"] == out["session_token"] == "[REDACTED]"
    assert out["credentials"] == {"AccessKeyId": "AKIA[REDACTED]", "SecretAccessKey": "[REDACTED]"}
    assert out["token_status"] == 403 and out["kind"] == "token_timeout"


def test_command_line_secrets_are_masked() -> None:
    command = [
        "python",
        "train.py",
        "--password=hunter2",
        "--api-key",
        "k-123456",
        "--db-token",
        "t0k3n",
        "--epochs",
        "90",
        "DB_PASSWORD=pw",
        "--url=https://user:p4ss@example.com/x?secret=s3&x=1",
    ]
    assert redact(command=command)["command"] == [
        "python",
        "train.py",
        "--password=[REDACTED]",
        "--api-key",
        "[REDACTED]",
        "--db-token",
        "[REDACTED]",
        "--epochs",
        "90",
        "DB_PASSWORD=[REDACTED]",
        "--url=https://[REDACTED]@example.com/x?secret=[REDACTED]&x=1",
    ]


def test_environment_secrets_are_masked_by_value() -> None:
    environ = {
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "MY_SERVICE_PASSWORD": "correct horse",
        "HOME": "/root",
        "EMPTY_TOKEN": "",
    }
    assert sorted(secret_values(environ)) == sorted([SECRET, KEY_ID, "correct horse"])
    logs.set_known_secrets(secret_values(environ))
    out = redact(error=f"signature for {SECRET} failed; said 'correct horse'", home="/root")
    assert out == {"error": "signature for [REDACTED] failed; said '[REDACTED]'", "home": "/root"}


def test_ordinary_events_are_unchanged() -> None:
    event = {
        "event": "sync.committed",
        "store": "s3://bucket/prefix",
        "reason": "the IMDSv2 token request to http://127.0.0.1:1338 got no reply within 2 s",
        "files": 3,
        "command": ["python", "primes.py", "--limit", "1e10"],
    }
    assert redact(**event) == event


def test_the_configured_chain_redacts_what_reaches_stdout() -> None:
    out = io.StringIO()
    logs.configure(out, json=True)
    logs.set_known_secrets([SECRET])
    logs.get_logger().error("store.unavailable", error=f"bad key {KEY_ID}/{SECRET}")
    line = json.loads(out.getvalue())
    assert line["error"] == "bad key AKIA[REDACTED]/[REDACTED]"
    assert SECRET not in out.getvalue() and KEY_ID not in out.getvalue()


@pytest.mark.parametrize(
    "uri", ["s3://user:hunter2@bucket/x", "ftp://user:hunter2@host/x", "file://u:hunter2@h/x"]
)
def test_a_malformed_uri_with_a_password_is_refused_without_echoing_it(uri: str) -> None:
    """Issue 16, finding 14: the one-line error named the URI, password and all."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--checkpoint-uri", uri, "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "--checkpoint-uri" in out.stderr and "[REDACTED]" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout


PRESIGNED = (
    "https://bucket.s3.amazonaws.com/data.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261207%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261207T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEXAMPLETOKEN"
    "&X-Amz-Signature=5f3c9e1d2b7a8f6e4d0c1b2a39f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c"
)
SIGNATURES = ("5f3c9e1d2b7a8f6e4d0c", "IQoJb3JpZ2luX2VjEXAMPLETOKEN", "AKIAIOSFODNN7EXAMPLE")


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        (PRESIGNED, SIGNATURES),
        (
            "https://d111.cloudfront.net/x?Expires=1&Signature=Qm9vbXNpZ25hdHVyZQ~~&Key-Pair-Id=K2",
            ("Qm9vbXNpZ25hdHVyZQ",),
        ),
        (
            "https://acct.blob.core.windows.net/c/x?sv=2022-11-02&se=2026&sp=r&sig=c2lnbmF0dXJl%3D",
            ("c2lnbmF0dXJl",),
        ),
        ("https://example.com/x?token=t0k3nVALUE&page=2", ("t0k3nVALUE",)),
        ("https://alice@example.com/x", ("alice",)),
        ("s3://bob:hunter2@bucket/x", ("bob", "hunter2")),
    ],
)
def test_presigned_url_signatures_and_url_user_names_are_masked(
    url: str, secret: tuple[str, ...]
) -> None:
    """Issue 22, item 8: a presigned URL's X-Amz-Signature was logged in clear."""
    out = redact(command=["curl", "-o", "x", url], error=f"GET {url} failed")
    text = json.dumps(out)
    assert not [s for s in secret if s in text], text
    assert "[REDACTED]" in out["command"][3] and "[REDACTED]" in str(out["error"])


def test_query_parameters_that_are_not_secrets_are_kept() -> None:
    out = redact(url="https://h/x?X-Amz-Expires=3600&X-Amz-SignedHeaders=host&design=1&easig=2")
    assert out["url"] == "https://h/x?X-Amz-Expires=3600&X-Amz-SignedHeaders=host&design=1&easig=2"


@pytest.mark.parametrize(
    "uri",
    [
        "s3://user@bucket/x?X-Amz-Signature=abcdef123456",
        "s3://bucket/x?X-Amz-Signature=abcdef123456&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE/x",
        "https://user:hunter2@host/x?sig=abcdef123456",
        "file://user@h/x",
    ],
)
def test_a_uri_error_names_neither_the_user_nor_the_signature(uri: str) -> None:
    """Issue 22, item 8: a URI error message kept both the signature and the user name."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--checkpoint-uri", uri, "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "--checkpoint-uri" in out.stderr, out.stderr
    for secret in ("user", "hunter2", "abcdef123456", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in out.stderr + out.stdout, out.stderr
