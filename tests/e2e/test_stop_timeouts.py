"""The grace periods platforms give, with the default --upload-reserve: a job that ignores
SIGTERM is SIGKILLed in time for its final checkpoint to commit (exit 75).

One row per grace period of the table in docs/container.md: docker stop gives 10 s; ECS,
Batch and Kubernetes 30 s by default; Fargate Spot (and ECS at its maximum) 120 s; a spot
interruption seen in the metadata service carries its own deadline, two minutes away. The
default reserve is a third of the grace period, at most 10 s, so each starts and keeps its
work. Outcomes only: exit status, what the store holds.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.imds_mock import ImdsMock
from tests.agentproc import AgentRun, agent_env, cli, start_agent

STUBBORN = textwrap.dedent("""
    import checkpoint, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    checkpoint.save_json("state.json", {"step": 1})
    print("ready", flush=True)
    for step in range(2, 10_000):
        time.sleep(0.2)
        checkpoint.save_json("state.json", {"step": step})
""")


@pytest.mark.parametrize(
    "platform, grace",
    [
        ("docker stop", "10"),
        ("ECS, Batch and Kubernetes default", "30s"),
        pytest.param("Fargate Spot, ECS maximum", "120s", marks=pytest.mark.long),
    ],
)
def test_a_job_ignoring_sigterm_is_killed_in_time_for_the_final_checkpoint(
    tmp_path: Path, platform: str, grace: str
) -> None:
    env_run = ["--job-id", "stubborn", "--grace-period", grace, "--sync-interval", "0"]
    r = start_agent(tmp_path, env_run, [sys.executable, "-c", STUBBORN])
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    r.signal(signal.SIGTERM)
    assert_killed_in_time_and_committed(tmp_path, r, platform)


@pytest.mark.long
def test_a_spot_notice_from_the_metadata_service_gives_its_two_minutes(tmp_path: Path) -> None:
    """AWS Batch on EC2: the spot interruption's deadline is the notice's own ``time``."""
    with ImdsMock() as imds:
        env = agent_env(
            tmp_path,
            {"SPOT_AGENT_IMDS": "on", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url},
        )
        env.pop("AWS_EC2_METADATA_DISABLED", None)
        args = ["--job-id", "stubborn", "--sync-interval", "0"]
        r = start_agent(tmp_path, args, [sys.executable, "-c", STUBBORN], env=env)
        r.wait_for(lambda: r.has_line("ready"), what="the job to start")
        r.wait_for(lambda: '"imds.polling"' in r.stdout, what="the metadata service found")
        imds.post_interruption("terminate", in_seconds=120)
        assert_killed_in_time_and_committed(tmp_path, r, "spot notice")
    assert r.event("notice.interruption")["source"].startswith("imds")


def assert_killed_in_time_and_committed(tmp_path: Path, r: AgentRun, platform: str) -> None:
    assert r.wait(240) == 75, r.stdout + r.stderr
    assert r.event("shutdown.child_killed")["exit_code"] == 128 + signal.SIGKILL
    final = r.event("agent.exit")
    assert final["committed"] is not None and final["seconds_left"] > 0, platform
    dst = tmp_path / "restored"
    out = cli(tmp_path, "checkpoints", "restore", "--job-id", "stubborn", "--to", str(dst))
    assert out.returncode == 0, out.stderr
    # what the job saved until it was killed, not what it had at the notice
    assert json.loads((dst / "state.json").read_text())["step"] > 2


LONG_SAVES = textwrap.dedent("""
    import checkpoint, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    step = 0
    print("ready", flush=True)
    while True:
        step += 1
        with checkpoint.saving():  # most of the job's time is spent inside a save
            checkpoint.save_json("a.json", {"step": step})
            time.sleep(0.3)
            checkpoint.save_json("b.json", {"step": step})
        time.sleep(0.05)
""")


def test_the_kill_at_the_deadline_never_cuts_a_save_in_half(tmp_path: Path) -> None:
    """The agent takes the save-point lock before its SIGKILL: a job that spends most of
    its time saving is killed between two saves, so its last save is committed whole."""
    args = ["--job-id", "saver", "--grace-period", "10", "--sync-interval", "0"]
    r = start_agent(tmp_path, args, [sys.executable, "-c", LONG_SAVES])
    r.wait_for(lambda: r.has_line("ready"), what="the job to start")
    time.sleep(1.0)
    r.signal(signal.SIGTERM)
    assert r.wait(120) == 75, r.stdout + r.stderr
    assert r.event("shutdown.child_killed")["exit_code"] == 128 + signal.SIGKILL
    assert r.event("agent.exit")["committed"] is not None, r.stdout
    dst = tmp_path / "restored"
    out = cli(tmp_path, "checkpoints", "restore", "--job-id", "saver", "--to", str(dst))
    assert out.returncode == 0, out.stderr
    a, b = (json.loads((dst / name).read_text())["step"] for name in ("a.json", "b.json"))
    assert a == b and a > 3  # one whole save, from after the notice
