"""Interruptions announced by the metadata service (our emulator, over real HTTP)."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agent.imds_mock import ImdsMock
from tests.agentproc import EXAMPLE, agent_env, run_agent, start_agent

PY = sys.executable


@pytest.fixture
def imds() -> Iterator[ImdsMock]:
    with ImdsMock() as mock:
        yield mock


def env_for(tmp: Path, mock: ImdsMock, **extra: str) -> dict[str, str]:
    return agent_env(
        tmp,
        {
            "SPOT_AGENT_IMDS": "on",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": mock.url,
            "SPOT_AGENT_IMDS_INTERVAL": "0.2s",
            **extra,
        },
    )


def test_spot_notice_stops_checkpoints_and_resumes(tmp_path: Path, imds: ImdsMock) -> None:
    cmd = [PY, str(EXAMPLE), "--limit", "1e8", "--segment", "1e6", "--segment-delay", "0.03"]
    env = env_for(tmp_path, imds)
    state = tmp_path / "state" / "spot-agent" / "jobs" / "spot" / "checkpoint" / "state.json"
    first = start_agent(tmp_path, ["--job-id", "spot"], cmd, env=env)
    first.wait_for(lambda: state.exists(), what="the job to save state")
    imds.post_interruption("terminate", in_seconds=30)
    assert first.wait(30) == 75
    ev = first.event("notice.interruption")
    assert ev["source"] == "imds:spot" and ev["action"] == "terminate"
    assert 0 < ev["seconds_left"] <= 30
    assert first.event("imds.polling")["endpoint"] == imds.url
    # The identity is bound once the service answered, in the background: events after
    # imds.polling carry it.
    assert ev["instance_id"].startswith("i-") and ev["instance_type"] == "m5.large"
    assert ev["availability_zone"] == "us-east-1a"
    saved = json.loads(state.read_text())
    assert 0 < saved["next"] < 100_000_000
    assert first.event("agent.exit")["committed"] is not None

    shutil.rmtree(state.parent)  # a new instance: nothing local survives
    imds.clear()
    second = run_agent(tmp_path, ["--job-id", "spot"], cmd, env=env)
    assert second.proc.returncode == 0, second.stderr
    assert f"resuming at {saved['next']:,}" in second.stdout
    assert "primes below 100,000,000: 5,761,455" in second.stdout


def test_the_job_sees_the_notice_file_with_the_deadline(tmp_path: Path, imds: ImdsMock) -> None:
    child = [
        PY,
        "-c",
        textwrap.dedent("""
        import checkpoint, signal, time
        signal.signal(signal.SIGTERM, lambda *_: None)  # this job polls the notice file instead
        print("ready", flush=True)
        while not checkpoint.interrupted():
            time.sleep(0.05)
        checkpoint.save_json("notice.json", checkpoint.notice())
    """),
    ]
    r = start_agent(tmp_path, ["--job-id", "nf"], child, env=env_for(tmp_path, imds))
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    imds.post_interruption("stop", in_seconds=60)
    assert r.wait(30) == 75
    seen = json.loads(
        (
            tmp_path / "state" / "spot-agent" / "jobs" / "nf" / "checkpoint" / "notice.json"
        ).read_text()
    )
    assert seen["source"] == "imds:spot" and seen["action"] == "stop"
    assert datetime.fromisoformat(seen["deadline"]).timestamp() > time.time()


def test_rebalance_checkpoints_and_keeps_running(tmp_path: Path, imds: ImdsMock) -> None:
    child = [
        PY,
        "-c",
        textwrap.dedent("""
        import checkpoint, os, time
        checkpoint.save_json("s.json", {"n": 1})
        print("ready", flush=True)
        while not os.path.exists(os.environ["CHECKPOINT_DIR"] + "/../go"):
            time.sleep(0.05)
    """),
    ]
    r = start_agent(
        tmp_path, ["--job-id", "rb", "--sync-interval", "0"], child, env=env_for(tmp_path, imds)
    )
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    imds.post_rebalance()
    r.wait_for(
        lambda: any(e["event"] == "sync.committed" for e in r.events()),
        what="the rebalance checkpoint",
    )
    assert r.event("notice.rebalance")["source"] == "imds:rebalance"
    assert r.event("sync.committed")["reason"] == "rebalance"
    assert r.proc.poll() is None  # still running
    (tmp_path / "state" / "spot-agent" / "jobs" / "rb" / "go").write_text("")
    assert r.wait(20) == 0


def test_stubborn_child_is_killed_and_committed_before_the_notice_deadline(
    tmp_path: Path, imds: ImdsMock
) -> None:
    child = [
        PY,
        "-c",
        textwrap.dedent("""
        import checkpoint, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        checkpoint.save_json("big.bin.json", {"x": "y" * 100000})
        print("ready", flush=True)
        time.sleep(600)
    """),
    ]
    r = start_agent(
        tmp_path, ["--job-id", "stub", "--upload-reserve", "2s"], child, env=env_for(tmp_path, imds)
    )
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    imds.post_interruption("terminate", in_seconds=5)
    posted = time.time()
    assert r.wait(30) == 75
    killed = r.event("shutdown.child_killed")
    final = r.event("agent.exit")
    assert killed["exit_code"] == 137
    assert final["committed"] is not None
    committed_at = datetime.fromisoformat(final["timestamp"].replace("Z", "+00:00")).timestamp()
    assert committed_at < posted + 5, "the final checkpoint must be committed before the deadline"
    steps = [e["event"] for e in r.events()]
    for step in (
        "notice.interruption",
        "shutdown.stop_child",
        "shutdown.child_killed",
        "sync.committed",
        "agent.exit",
    ):
        assert step in steps


def test_a_later_sigterm_with_a_shorter_grace_moves_the_deadline(
    tmp_path: Path, imds: ImdsMock
) -> None:
    """ECS draining or a Kubernetes drain: IMDS says 120 s, then SIGTERM gives only 4 s."""
    child = [
        PY,
        "-c",
        textwrap.dedent("""
        import checkpoint, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        checkpoint.save_json("state.json", {"step": 3})
        print("ready", flush=True)
        time.sleep(600)
    """),
    ]
    r = start_agent(
        tmp_path,
        ["--job-id", "tight", "--grace-period", "4s", "--upload-reserve", "1.5s"],
        child,
        env=env_for(tmp_path, imds),
    )
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    imds.post_interruption("terminate", in_seconds=120)
    r.wait_for(
        lambda: any(e["event"] == "shutdown.stop_child" for e in r.events()),
        what="the IMDS notice to be acted on",
    )
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 75
    took = time.monotonic() - t0
    moved = r.event("notice.deadline_moved")
    assert moved["source"] == "sigterm" and moved["seconds_left"] <= 4
    assert r.event("shutdown.child_killed")["exit_code"] == 137
    assert r.event("agent.exit")["committed"] is not None
    assert took < 4 + 1.5, f"the agent kept the first, later deadline: {took:.1f}s"
