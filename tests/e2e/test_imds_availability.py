"""The metadata service is a state, not a verdict at start (issue: "notices never missed").

One bad answer at start (nothing listening, a 429, a slow reply, a token PUT lost to a hop
limit of 1) used to turn notices off for the whole job, or exit 2 with ``--imds on``. Now
the agent keeps trying in the background and acts on a notice posted once it answers.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.imds_mock import ImdsMock
from tests import servers
from tests.agentproc import AgentRun, agent_env, start_agent

PY = sys.executable

#: Waits for the stop signal, saves its state, exits 0.
WAITING_JOB = textwrap.dedent("""
    import checkpoint, signal, sys, time
    def stop(*_):
        checkpoint.save_json("state.json", {"stopped": True})
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""")


@pytest.fixture
def imds() -> Iterator[ImdsMock]:
    with ImdsMock() as mock:
        yield mock


def start(tmp: Path, url: str, job: str, **env: str) -> AgentRun:
    environ = agent_env(
        tmp,
        {
            "SPOT_AGENT_IMDS": "on",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": url,
            "SPOT_AGENT_IMDS_INTERVAL": "0.2s",
            **env,
        },
    )
    r = start_agent(tmp, ["--job-id", job, "--sync-interval", "0"], [PY, "-c", WAITING_JOB],
                    env=environ)  # fmt: skip
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    return r


def has_event(r: AgentRun, name: str) -> bool:
    return any(e["event"] == name for e in r.events())


def acts_on_a_notice(r: AgentRun, mock: ImdsMock) -> None:
    r.wait_for(lambda: has_event(r, "imds.polling"), timeout=30, what="polling to start")
    mock.post_interruption("terminate", in_seconds=60)
    assert r.wait(60) == 75, r.stdout + r.stderr
    assert r.event("notice.interruption")["source"] == "imds:spot"
    assert r.event("agent.exit")["committed"] is not None
    assert "Traceback" not in r.stderr


def test_imds_on_with_nothing_listening_runs_the_job_and_polls_once_it_answers(
    tmp_path: Path,
) -> None:
    with servers.closed_port() as port:  # refused, and no other test's server takes it
        r = start(tmp_path, f"http://127.0.0.1:{port}", "late")
        r.wait_for(lambda: has_event(r, "imds.unavailable"), what="the loud warning")
        loud = r.event("imds.unavailable")
        assert loud["level"] == "error" and loud["required"] is True
        assert loud["kind"] == "connection_refused"
        assert r.proc.poll() is None, "--imds on must not end the job because IMDS is down"
    with ImdsMock(port=port) as late:  # bound the moment the block let the port go
        acts_on_a_notice(r, late)


@pytest.mark.parametrize("fault", ["throttled", "slow", "5xx"])
def test_one_bad_answer_at_start_does_not_turn_notices_off(
    tmp_path: Path, imds: ImdsMock, fault: str
) -> None:
    if fault == "throttled":
        imds.fail_next(3, 429)
    elif fault == "5xx":
        imds.fail_next(3, 503)
    else:
        imds.delay(2.5)  # longer than the client's 2 s read timeout
    r = start(tmp_path, imds.url, f"bad-start-{fault}", SPOT_AGENT_IMDS="auto")
    if fault == "slow":
        r.wait_for(lambda: has_event(r, "imds.unavailable"), what="the first failure")
        imds.delay(0)
    acts_on_a_notice(r, imds)


def test_hop_limit_1_falls_back_to_imdsv1_and_says_how_to_fix_it(tmp_path: Path) -> None:
    with ImdsMock(require_token=False) as mock:  # HttpTokens optional, as EC2 defaults
        mock.hop_limit_1()
        r = start(tmp_path, mock.url, "hop")
        acts_on_a_notice(r, mock)
    fallbacks = [e for e in r.events() if e["event"] == "imds.v1_fallback"]
    assert len(fallbacks) == 1, "the fix is logged once"
    assert "--http-put-response-hop-limit 2" in fallbacks[0]["reason"]
    assert r.event("imds.polling")["imds_v1"] is True


def test_hop_limit_1_with_imdsv1_forbidden_explains_and_never_harms_the_job(
    tmp_path: Path,
) -> None:
    with ImdsMock(require_token=False) as mock:
        mock.hop_limit_1()
        r = start(tmp_path, mock.url, "hop-forbid", SPOT_AGENT_IMDS_V1="forbid")
        r.wait_for(lambda: has_event(r, "imds.unavailable"), what="the explanation")
        event = r.event("imds.unavailable")
        assert event["kind"] == "token_timeout"
        assert "HttpPutResponseHopLimit" in event["reason"]
        assert not has_event(r, "imds.v1_fallback")
        mock.hop_limit_1(False)  # fixed by the operator: polling starts, with IMDSv2
        acts_on_a_notice(r, mock)
    assert r.event("imds.polling")["imds_v1"] is False


def test_the_sdk_switch_turns_imds_off(tmp_path: Path, imds: ImdsMock) -> None:
    r = start(tmp_path, imds.url, "sdk-off", AWS_EC2_METADATA_DISABLED="true")
    r.wait_for(lambda: has_event(r, "imds.skipped"), what="imds.skipped")
    assert r.event("imds.skipped")["why"] == "AWS_EC2_METADATA_DISABLED=true"
    r.signal()
    assert r.wait(30) == 75
    assert imds.state()["live_tokens"] == 0, "no request reached the metadata service"


def test_imds_auto_and_unreachable_says_so_once_and_the_job_runs_to_its_end(
    tmp_path: Path, closed_endpoint: str
) -> None:
    job = textwrap.dedent("""
        import os, time
        go = os.path.join(os.environ["CHECKPOINT_DIR"], "..", "go")
        while not os.path.exists(go):
            time.sleep(0.05)
        raise SystemExit(4)
    """)
    env = agent_env(
        tmp_path,
        {
            "SPOT_AGENT_IMDS": "auto",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": closed_endpoint,
            "SPOT_AGENT_IMDS_INTERVAL": "0.2s",
        },
    )
    r = start_agent(tmp_path, ["--job-id", "auto-down"], [PY, "-c", job], env=env)
    r.wait_for(lambda: has_event(r, "imds.unavailable"), what="imds.unavailable")
    (tmp_path / "state" / "spot-agent" / "jobs" / "auto-down" / "go").write_text("")
    assert r.wait(30) == 4
    said = [e for e in r.events() if e["event"] == "imds.unavailable"]
    assert len(said) == 1 and said[0]["level"] == "warning"
    assert said[0]["notices"].startswith("SIGTERM only")
