"""Structured logs end to end: the real entrypoint, a moto server over HTTP for CloudWatch Logs."""

from __future__ import annotations

import fcntl
import http.server
import itertools
import json
import os
import pty
import socket
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.logs.cloudwatch import ShipLimits
from tests.agentproc import agent_env, run_agent, start_agent
from tests.conftest import _AWS_VARIABLES

PY = sys.executable
_groups = itertools.count(1)


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def cw_env(tmp: Path, endpoint: str, group: str, **extra: str) -> dict[str, str]:
    """The agent's environment with CloudWatch Logs pointed at ``endpoint`` (fake credentials)."""
    env = agent_env(tmp)
    for name in _AWS_VARIABLES:
        env.pop(name, None)
    env.update(
        SPOT_AGENT_LOG_GROUP=group,
        AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
    )
    env.update(extra)
    return env


def logs_client(endpoint: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        "logs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def read_stream(endpoint: str, group: str, stream: str) -> list[dict[str, Any]]:
    client = logs_client(endpoint)
    events: list[dict[str, Any]] = []
    token = None
    while True:
        kw: dict[str, Any] = {"nextToken": token} if token else {}
        page = client.get_log_events(
            logGroupName=group, logStreamName=stream, startFromHead=True, **kw
        )
        events += page["events"]
        if not page["events"] or page.get("nextForwardToken") == token:
            break
        token = page["nextForwardToken"]
    return [json.loads(e["message"]) for e in events]


def child_lines(events: list[dict[str, Any]], stream: str = "stdout") -> list[str]:
    return [e["line"] for e in events if e["event"] == "child.output" and e["stream"] == stream]


PRINTER = """
    import os, sys
    n = int(sys.argv[1])
    a = os.environ["SPOT_AGENT_ATTEMPT"]
    for i in range(n):
        print(f"attempt {a} line {i}")
    print("to stderr", file=sys.stderr)
    sys.stdout.write("no newline at the end")
"""


def test_every_line_reaches_the_jobs_stream_in_order_across_attempts(
    tmp_path: Path, moto_server: str
) -> None:
    group = f"/spot-agent/test-{next(_groups)}"
    env = cw_env(tmp_path, moto_server, group)
    cmd = [*py(PRINTER), "3000"]
    first = run_agent(tmp_path, ["--job-id", "cw:1"], cmd, env=env)
    second = run_agent(tmp_path, ["--job-id", "cw:1"], cmd, env=env)
    assert first.proc.returncode == 0 and second.proc.returncode == 0, first.stderr
    # The pass-through keeps docker logs as they were: the raw lines, plus agent events.
    assert first.has_line("attempt 1 line 2999")
    assert first.has_line("no newline at the end")  # the next event starts on a new line
    assert "to stderr" in first.stderr.splitlines()
    assert first.event("logs.shipped")["events_sent"] > 3000

    events = read_stream(moto_server, group, "cw-1")  # ':' is not allowed in stream names
    expected = [f"attempt {a} line {i}" for a in (1, 2) for i in range(3000)]
    out = child_lines(events)
    assert [x for x in out if x != "no newline at the end"] == expected
    assert out.count("no newline at the end") == 2
    assert child_lines(events, "stderr") == ["to stderr", "to stderr"]
    assert all(e["job_id"] == "cw:1" for e in events)
    assert [e["attempt"] for e in events if e["event"] == "agent.start"] == [1, 2]
    committed = [e for e in events if e["event"] == "sync.committed"]
    assert committed and committed[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "SpotAgent"
    assert "_aws" not in first.event("sync.committed")  # EMF only in the CloudWatch copy


def test_child_output_json_puts_every_line_on_stdout_as_an_event(tmp_path: Path) -> None:
    r = run_agent(
        tmp_path,
        ["--job-id", "js", "--child-output", "json"],
        py("""
        import sys
        print("hello")
        sys.stdout.flush()
        sys.stdout.buffer.write(b"bad \\xff\\xfe bytes\\n")
        print("oops", file=sys.stderr)
    """),
    )
    assert r.proc.returncode == 0, r.stderr
    assert not r.has_line("hello")
    lines = [(e["stream"], e["line"]) for e in r.events() if e["event"] == "child.output"]
    assert ("stdout", "hello") in lines
    assert ("stdout", "bad \\xff\\xfe bytes") in lines
    assert ("stderr", "oops") in lines


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(500)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        body = b'{"__type": "ServiceUnavailableException", "message": "down"}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def failing_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["closed-port", "errors"])
def test_a_broken_endpoint_costs_the_job_nothing_and_the_loss_is_counted(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    endpoint = request.getfixturevalue(
        "closed_endpoint" if kind == "closed-port" else "failing_endpoint"
    )
    env = cw_env(tmp_path, endpoint, "/spot-agent/broken")
    r = run_agent(
        tmp_path,
        ["--job-id", "broken"],
        py("for i in range(100): print(i)\nraise SystemExit(3)"),
        env=env,
        timeout=60,
    )
    assert r.proc.returncode == 3, r.stderr
    assert r.has_line("99")
    lost = r.event("logs.lost")
    assert lost["lost"] >= 100 and lost["lost"] == (
        lost["dropped_queue_full"] + lost["failed_to_send"] + lost["unsent_at_exit"]
    )
    # the flush is bounded by its timeout, whatever the endpoint does
    assert lost["seconds"] <= lost["flush_timeout"] + 1.0, lost


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that takes connections and never answers (a firewall that drops
    packets, a dead proxy): the kernel completes the handshake, nobody reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def test_a_black_holed_endpoint_does_not_hold_up_the_pass_through(
    tmp_path: Path, black_hole: str
) -> None:
    """A chatty job with --log-group to a dead endpoint ran 10-25x slower: the agent kept
    making events of every line that nobody could take. The output must drain, and lines
    beyond what the queue holds must only be counted (bench/log_overhead.py has figures)."""
    lines = 1_000_000
    env = cw_env(tmp_path, black_hole, "/spot-agent/black-hole")
    r = run_agent(
        tmp_path,
        ["--job-id", "hole"],
        py(f"""
        import sys
        w = sys.stdout.write
        for i in range({lines}):
            w(f"line {{i}} of a chatty job's output\\n")
        """),
        env=env,
        timeout=300,
    )
    assert r.proc.returncode == 0, r.stderr
    out = [x for x in r.job_stdout().splitlines() if x.startswith("line ")]
    assert len(out) == lines and out[-1] == f"line {lines - 1} of a chatty job's output"
    closed = r.event("child.output_closed")
    assert closed["stdout_lines"] == lines
    made = lines - closed.get("lines_without_event", 0)
    # Events are made only while the shipper can take them: at most a queue-full, plus
    # the chunk being turned into events when the queue filled (a read is <= 256 KiB).
    assert made <= ShipLimits().queue_events + 10_000, closed
    lost = r.event("logs.lost")
    assert lost["lost"] >= lines and lost["events_sent"] == 0


def test_an_interruption_flushes_within_the_deadline(tmp_path: Path, failing_endpoint: str) -> None:
    env = cw_env(
        tmp_path,
        failing_endpoint,
        "/spot-agent/int",
        SPOT_AGENT_GRACE_PERIOD="4s",
        SPOT_AGENT_UPLOAD_RESERVE="1s",
    )
    r = start_agent(
        tmp_path,
        ["--job-id", "int"],
        py("import time\nprint('ready', flush=True)\nwhile True: time.sleep(0.1)"),
        env=env,
    )
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    t0 = time.monotonic()
    r.signal()
    assert r.wait(30) == 75
    assert time.monotonic() - t0 < 4.5
    assert r.event("logs.lost")["flush_timeout"] <= 3.0


def test_resource_samples_of_the_job_tree(tmp_path: Path) -> None:
    r = run_agent(
        tmp_path,
        ["--job-id", "res", "--sample-interval", "0.2"],
        py("""
        import subprocess, sys, time
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
        end = time.time() + 1.2
        while time.time() < end:
            pass
        kid.wait()
    """),
    )
    assert r.proc.returncode == 0, r.stderr
    samples = [e for e in r.events() if e["event"] == "child.resources"]
    assert samples, r.stdout
    assert max(s["processes"] for s in samples) >= 2
    # a busy job shows (how much depends on what else the machine runs)
    assert max(s["cpu_percent"] for s in samples) > 0 and samples[-1]["cpu_seconds"] > 0
    assert all(s["rss_bytes"] > 0 and s["open_files"] >= 0 for s in samples)


def test_a_bad_stream_template_is_a_usage_error(tmp_path: Path) -> None:
    r = run_agent(tmp_path, ["--log-stream", "{job}"], ["true"])
    assert r.proc.returncode == 2
    assert "--log-stream (SPOT_AGENT_LOG_STREAM)" in r.stderr


def run_at_terminal(tmp: Path, run_args: list[str], env: dict[str, str]) -> str:
    """The agent with a terminal (80 columns) as stdin, stdout and stderr, as under
    ``docker run -t``, ECS pseudoTerminal or Kubernetes ``tty: true``; what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [PY, "-m", "agent", "run", *run_args, "--", *py("print('job line')")],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=tmp,
        start_new_session=True,
    )
    os.close(slave)
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal closed it
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(60) == 0, shown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
    return shown.decode().replace("\r\n", "\n")


def test_at_a_terminal_json_stays_json_when_asked(tmp_path: Path) -> None:
    """docker run -t, ECS pseudoTerminal and Kubernetes tty: true switched the agent to
    key=value text, which broke the awslogs pipeline and the Logs Insights queries."""
    env = agent_env(tmp_path, {"SPOT_AGENT_LOG_FORMAT": "json"})
    shown = run_at_terminal(tmp_path, ["--job-id", "tty"], env)
    agent_lines = [x for x in shown.splitlines() if x and x != "job line"]
    assert agent_lines and all(json.loads(x)["job_id"] == "tty" for x in agent_lines), shown


def test_at_a_terminal_console_lines_are_compact(tmp_path: Path) -> None:
    env = agent_env(tmp_path, {"SPOT_AGENT_LOG_FORMAT": "console", "NO_COLOR": "1"})
    shown = run_at_terminal(tmp_path, ["--job-id", "tty", "--log-level", "info"], env)
    lines = [x for x in shown.splitlines() if x]
    assert "job line" in lines
    agent_lines = [x for x in lines if x != "job line"]
    assert all(x.startswith("spot-agent ▸ ") for x in agent_lines), shown
    assert all(len(x) <= 80 for x in agent_lines), shown
    # the context, when it changes: the job id before the store call (agent.starting),
    # then with the attempt the claim gave
    context = [x for x in agent_lines if "job_id=tty" in x]
    assert len(context) == 2 and "attempt=1" in context[1], shown
    assert any(x.startswith("spot-agent ▸ agent.exit exit_code=0") for x in agent_lines)
    assert "\x1b[" not in shown  # NO_COLOR


def test_log_level_warning_keeps_only_warnings_and_errors(tmp_path: Path) -> None:
    r = run_agent(tmp_path, ["--job-id", "quiet", "--log-level", "warning"], py("print('hi')"))
    assert r.proc.returncode == 0, r.stderr
    assert r.has_line("hi")
    assert all(e["level"] in ("warning", "error") for e in r.events()), r.stdout
