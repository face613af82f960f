"""A SIGTERM at any moment is honoured: the agent exits within --grace-period.

The slow steps are made slow for real: a fault proxy stalls SeaweedFS (the claim, the
restore, a sync), the IMDS emulator delays its answers (the probe). The contract is the
grace period, so that is the one time asserted, with a few seconds of slack for a loaded
machine; everything else is outcomes: exit status, what the store holds.
"""

from __future__ import annotations

import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.imds_mock import ImdsMock
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.s3 import S3Store
from tests.agentproc import AgentRun, run_agent, start_agent
from tests.faultproxy import FaultProxy, fault_proxy
from tests.servers import SeaweedS3
from tests.stores import s3_agent_env

PY = sys.executable
GRACE = 8.0
#: time a loaded machine may need beyond the grace period to start and end a process
SLACK = 4.0
STALL = 120.0  # far longer than any grace period here

SAVE_AND_SLEEP = textwrap.dedent("""
    import checkpoint, os, sys, time
    n = checkpoint.load_json("n.json", default=0) + 1
    checkpoint.save_json("n.json", n)
    checkpoint.save_bytes("data", os.urandom(200_000))
    print("saved", n, flush=True)
    if len(sys.argv) > 1:
        time.sleep(600)
""")


@pytest.fixture
def proxy(seaweedfs: SeaweedS3) -> Iterator[FaultProxy]:
    with fault_proxy(seaweedfs.endpoint) as p:
        yield p


@pytest.fixture
def env(
    tmp_path: Path,
    s3_env: SeaweedS3,  # this process's SDK variables point at SeaweedFS (``stored``)
    s3_bucket: tuple[str, str],
    proxy: FaultProxy,
) -> dict[str, str]:
    seaweedfs = s3_env
    e = s3_agent_env(tmp_path, seaweedfs, f"s3://{s3_bucket[1]}/stop")
    e["AWS_ENDPOINT_URL_S3"] = proxy.url
    return e


def stored(seaweedfs: SeaweedS3, bucket: str, job: str) -> list[int]:
    store = S3Store.from_uri(f"s3://{bucket}/stop")
    try:
        return JobStore(store, job).sequences()
    finally:
        store.close()


def stop_within_grace(r: AgentRun, sig: int = signal.SIGTERM) -> int:
    t0 = time.monotonic()
    r.signal(sig)
    code = r.wait(GRACE + 60)
    took = time.monotonic() - t0
    assert took < GRACE + SLACK, f"exited {took:.1f}s after the signal: {r.stdout}"
    left = r.event("agent.exit").get("seconds_left")
    assert left is None or left >= 0, r.stdout
    return code


def wait_for_fault(r: AgentRun, proxy: FaultProxy) -> None:
    r.wait_for(lambda: proxy.faults >= 1, what="the stalled request")


def first_checkpoint(tmp: Path, env: dict[str, str], job: str) -> None:
    r = run_agent(tmp, ["--job-id", job], [PY, "-c", SAVE_AND_SLEEP], env=env)
    assert r.proc.returncode == 0, r.stdout + r.stderr


def test_sigterm_before_the_claim(
    tmp_path: Path,
    env: dict[str, str],
    proxy: FaultProxy,
    seaweedfs: SeaweedS3,
    s3_bucket: tuple[str, str],
) -> None:
    proxy.inject("stall", 100, seconds=STALL)  # the store check never answers
    r = start_agent(
        tmp_path,
        ["--job-id", "claim", "--grace-period", f"{GRACE}s"],
        [PY, "-c", SAVE_AND_SLEEP],
        env=env,
    )
    wait_for_fault(r, proxy)
    assert stop_within_grace(r) == 75
    assert not any(e["event"] in ("agent.start", "child.started") for e in r.events())
    proxy.clear()
    assert stored(seaweedfs, s3_bucket[1], "claim") == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 75), (signal.SIGINT, 130)])
def test_a_signal_during_a_long_restore(
    tmp_path: Path,
    env: dict[str, str],
    proxy: FaultProxy,
    seaweedfs: SeaweedS3,
    s3_bucket: tuple[str, str],
    sig: int,
    code: int,
) -> None:
    first_checkpoint(tmp_path, env, "restore")
    workdir = tmp_path / "state" / "spot-agent" / "jobs" / "restore" / "checkpoint"
    (workdir / "data").unlink()  # the next start must download it
    proxy.inject("stall", 100, method="GET", path="/packs/", seconds=STALL)  # small: packed
    r = start_agent(
        tmp_path,
        ["--job-id", "restore", "--grace-period", f"{GRACE}s"],
        [PY, "-c", SAVE_AND_SLEEP],
        env=env,
    )
    wait_for_fault(r, proxy)
    assert stop_within_grace(r, sig) == code
    assert "child.started" not in {e["event"] for e in r.events()}  # not forwarded to a job
    proxy.clear()
    assert stored(seaweedfs, s3_bucket[1], "restore") == [1]  # the cut restore committed nothing
    again = run_agent(tmp_path, ["--job-id", "restore"], [PY, "-c", SAVE_AND_SLEEP], env=env)
    assert again.proc.returncode == 0, again.stdout
    assert again.event("restore.done")["sequence"] == 1 and again.has_line("saved 2")


def test_sigterm_during_the_imds_probe(tmp_path: Path) -> None:
    with ImdsMock() as imds:
        imds.delay(STALL)  # every metadata request hangs; the probe waits its timeouts
        env_extra = {"SPOT_AGENT_IMDS": "on", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url}
        from tests.agentproc import agent_env

        r = start_agent(
            tmp_path,
            ["--job-id", "probe", "--grace-period", f"{GRACE}s"],
            [PY, "-c", SAVE_AND_SLEEP],
            env=agent_env(tmp_path, env_extra),
        )
        # The probe runs in the background (issue 14): the job starts while it hangs.
        r.wait_for(
            lambda: any(e["event"] == "child.started" for e in r.events()),
            what="the job to start while the metadata service hangs",
        )
        assert stop_within_grace(r) == 75


def test_sigterm_during_a_sync(
    tmp_path: Path,
    env: dict[str, str],
    proxy: FaultProxy,
    seaweedfs: SeaweedS3,
    s3_bucket: tuple[str, str],
) -> None:
    first_checkpoint(tmp_path, env, "sync")
    job = textwrap.dedent("""
        import checkpoint, os, time
        print("ready", flush=True)
        checkpoint.save_bytes("more", os.urandom(300_000))
        checkpoint.request_sync()
        time.sleep(600)
    """)
    # the requested sync's uploads stall for a while, then go through on a retry
    proxy.inject("stall", 1, method="PUT", path="/packs/", seconds=3)  # small: packed
    r = start_agent(
        tmp_path, ["--job-id", "sync", "--grace-period", f"{GRACE}s"], [PY, "-c", job], env=env
    )
    wait_for_fault(r, proxy)
    assert r.event("sync.requested")
    assert stop_within_grace(r) == 75
    # the sync in flight committed the job's last state; the final one found nothing new
    assert r.event("agent.exit")["restorable"] == 2, r.stdout
    assert stored(seaweedfs, s3_bucket[1], "sync") == [1, 2]
