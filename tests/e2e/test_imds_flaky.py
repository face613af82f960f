"""A flaky metadata service under ``spot-agent run``: 500s, answers slower than the
client's read timeout, token 401 storms, the service vanishing (and coming back on the same
port). The job is never harmed, and a notice posted after the faults is still acted on."""

from __future__ import annotations

import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agent.imds_mock import ImdsMock
from tests.agentproc import AgentRun, agent_env, start_agent

PY = sys.executable

#: Waits for the notice file (or the stop signal), saves its state, exits 0.
WAITING_JOB = textwrap.dedent("""
    import checkpoint, signal, sys, time
    def stop(*_):
        checkpoint.save_json("state.json", {"stopped": True, "notice": checkpoint.notice()})
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    checkpoint.save_json("state.json", {"stopped": False})
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""")


@pytest.fixture
def imds() -> Iterator[ImdsMock]:
    mock = ImdsMock().start()
    try:
        yield mock
    finally:
        mock.stop()


def env_for(tmp: Path, url: str) -> dict[str, str]:
    return agent_env(
        tmp,
        {
            "SPOT_AGENT_IMDS": "on",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": url,
            "SPOT_AGENT_IMDS_INTERVAL": "0.2s",
        },
    )


def start_polling(tmp: Path, url: str, job: str, command: list[str]) -> AgentRun:
    r = start_agent(tmp, ["--job-id", job, "--sync-interval", "0"], command, env=env_for(tmp, url))
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    # Polling starts in the background once the service answers.
    r.wait_for(lambda: any(e["event"] == "imds.polling" for e in r.events()), what="polling")
    assert r.event("imds.polling")["endpoint"] == url
    return r


def poll_failures(r: AgentRun) -> set[str]:
    return {e["kind"] for e in r.events() if e["event"] == "imds_poll_failed"}


def wait_for_failure(r: AgentRun, kind: str, timeout: float = 30) -> None:
    r.wait_for(lambda: kind in poll_failures(r), timeout, what=f"an imds_poll_failed of {kind}")


def assert_acted_on_the_notice(r: AgentRun, timeout: float = 60) -> None:
    assert r.wait(timeout) == 75, r.stdout + r.stderr
    notice = r.event("notice.interruption")
    assert notice["source"] == "imds:spot" and notice["action"] == "terminate"
    assert r.event("shutdown.child_exited")["exit_code"] == 0  # the job stopped cleanly
    assert r.event("agent.exit")["committed"] is not None
    assert "Traceback" not in r.stderr


def test_500s_timeouts_and_token_storms_then_a_notice_is_acted_on(
    tmp_path: Path, imds: ImdsMock
) -> None:
    r = start_polling(tmp_path, imds.url, "faults", [PY, "-c", WAITING_JOB])

    imds.fail_next(40, 500)
    wait_for_failure(r, "http_5xx")
    imds.fail_next(0)

    imds.delay(2.5)  # longer than the client's 2 s read timeout
    wait_for_failure(r, "read_timeout")
    imds.delay(0)

    storm_over = threading.Event()

    def storm() -> None:
        while not storm_over.wait(0.02):
            imds.drop_tokens()

    stormer = threading.Thread(target=storm, daemon=True)
    stormer.start()
    try:
        wait_for_failure(r, "unauthorized")
    finally:
        storm_over.set()
        stormer.join()

    assert r.proc.poll() is None, "the job must keep running through metadata faults"
    assert not any(e["event"].startswith(("notice.", "shutdown.")) for e in r.events())
    imds.post_interruption("terminate", in_seconds=60)
    assert_acted_on_the_notice(r)
    assert r.event("imds_recovered")["after_failures"] >= 1
    # Each kind of failure is reported once, however many polls failed.
    kinds = [e["kind"] for e in r.events() if e["event"] == "imds_poll_failed"]
    assert sorted(kinds) == sorted(set(kinds)), kinds


HANG_SECONDS = 120.0


def stamp(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("fault", ["vanishes", "hangs"])
def test_a_dead_metadata_service_costs_the_job_nothing(
    tmp_path: Path, imds: ImdsMock, fault: str
) -> None:
    job_seconds = 3.0
    job = textwrap.dedent(f"""
        import checkpoint, time
        print("ready", flush=True)
        time.sleep({job_seconds})
        checkpoint.save_json("done.json", True)
        raise SystemExit(5)
    """)
    r = start_polling(tmp_path, imds.url, f"dead-{fault}", [PY, "-c", job])
    if fault == "vanishes":
        imds.stop()
    else:
        imds.delay(HANG_SECONDS)  # accepts connections, never answers
    assert r.wait(HANG_SECONDS / 2) == 5, r.stdout + r.stderr
    exited = r.event("child.exited")
    assert exited["exit_code"] == 5
    assert r.event("sync.committed")["reason"] == "exit"
    # The point: no metadata request, timeout or backoff holds the exit up. Measured on the
    # agent's own clock from the job's exit, and far below the hang a held exit would wait
    # out, so a loaded machine cannot fail it and a real hold cannot pass it.
    held = stamp(r.event("agent.exit")) - stamp(exited)
    assert held < HANG_SECONDS / 4, f"the agent exited {held:.1f}s after its job"
    if fault == "vanishes":
        assert "connection_refused" in poll_failures(r)
    assert not any(e["event"].startswith("notice.") for e in r.events())


def test_the_service_vanishes_and_comes_back_on_the_same_port(
    tmp_path: Path, imds: ImdsMock
) -> None:
    r = start_polling(tmp_path, imds.url, "back", [PY, "-c", WAITING_JOB])
    port = imds.port
    imds.stop()
    wait_for_failure(r, "connection_refused")
    with ImdsMock(port=port) as again:  # a restarted IMDS: every old token is unknown
        assert again.url == imds.url
        r.wait_for(
            lambda: any(e["event"] == "imds_recovered" for e in r.events()),
            timeout=45,
            what="polling to recover",
        )
        assert r.proc.poll() is None
        again.post_interruption("terminate", in_seconds=60)
        assert_acted_on_the_notice(r)
