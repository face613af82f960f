"""A store that stumbles at start (issue 22, item 6): the real agent against SeaweedFS behind
a fault-injecting proxy on 127.0.0.1.

- 503 SlowDown, connection resets and truncated answers on the first requests are retried
  with back-off, one ``store.retry`` line per wait, and the job runs;
- a store that never answers is reported within 10 s of start, and when
  ``--startup-timeout`` runs out the agent exits 81, which the Batch retry strategy retries;
- a store that will not change its answer (no bucket, bad credentials) fails at once:
  exit 69, one line, no retry.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agent import exits
from agent.batch import jobdef
from tests.agentproc import AgentRun, run_agent, start_agent
from tests.faultproxy import FaultProxy, fault_proxy
from tests.servers import SeaweedS3
from tests.stores import s3_agent_env

PY = sys.executable
JOB = [PY, "-c", "import checkpoint; checkpoint.save_json('n.json', 1); print('ran')"]


@pytest.fixture
def proxy(seaweedfs: SeaweedS3) -> Iterator[FaultProxy]:
    with fault_proxy(seaweedfs.endpoint) as p:
        yield p


@pytest.fixture
def env(
    tmp_path: Path, seaweedfs: SeaweedS3, s3_bucket: tuple[str, str], proxy: FaultProxy
) -> dict[str, str]:
    e = s3_agent_env(tmp_path, seaweedfs, f"s3://{s3_bucket[1]}/start")
    e["AWS_ENDPOINT_URL_S3"] = proxy.url
    assert proxy.url.startswith("http://127.0.0.1:")
    return e


def at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def retries(r: AgentRun) -> list[dict[str, object]]:
    return [e for e in r.events() if e["event"] == "store.retry"]


@pytest.mark.parametrize(
    ("kind", "count"),
    [
        pytest.param("503", 10, marks=pytest.mark.long),  # about 40 s of back-off
        pytest.param("reset", 8, marks=pytest.mark.long),
        ("truncate", 4),
    ],
)
def test_transient_faults_at_start_are_waited_out_and_the_job_runs(
    tmp_path: Path, env: dict[str, str], proxy: FaultProxy, kind: str, count: int
) -> None:
    """On main: 8-10 of these in a row ended in exit 69, which Batch does not retry."""
    proxy.inject(kind, count, method=None if kind != "truncate" else "GET")
    r = run_agent(tmp_path, ["--job-id", f"flaky-{kind}"], JOB, env=env, timeout=240)
    assert r.proc.returncode == 0, r.stdout + r.stderr
    assert proxy.faults == count
    waits = retries(r)
    assert waits, r.stdout
    assert all(e["level"] == "warning" and e["seconds_left"] > 0 for e in waits)
    assert [e["tries"] for e in waits] == list(range(1, len(waits) + 1))
    assert r.event("sync.committed")["reason"] == "exit"
    assert "ran" in r.stdout


def test_a_silent_store_is_reported_within_10s_and_ends_in_a_retried_exit(
    tmp_path: Path, env: dict[str, str], proxy: FaultProxy
) -> None:
    """On main: 484 s without a line (not even agent.start), then exit 69."""
    proxy.inject("stall", 1000, seconds=600)  # accepts, never answers
    started = time.time()
    r = start_agent(tmp_path, ["--job-id", "silent", "--startup-timeout", "15s"], JOB, env=env)
    r.wait_for(lambda: bool(retries(r)), timeout=60, what="a line about the silent store")
    first = retries(r)[0]
    assert at(r.event("agent.starting")) - started < 10, r.stdout
    assert at(first) - started < 10, r.stdout
    assert "timed out" in str(first["error"]), first
    code = r.wait(120)
    assert code == exits.STORE_NOT_READY == 81, r.stdout + r.stderr
    assert code in exits.RETRYABLE
    retried = {rule.get("onExitCode") for rule in jobdef.retry_strategy()["evaluateOnExit"]}
    assert str(code) in retried
    failed = r.event("store.unavailable")
    assert failed["exit_code"] == 81 and "--startup-timeout" in str(failed["error"])
    assert not [e for e in r.events() if e["event"] in ("agent.start", "child.started")]


@pytest.mark.parametrize("fault", ["no bucket", "bad secret"])
def test_a_store_that_will_not_change_its_answer_fails_at_once(
    tmp_path: Path, seaweedfs: SeaweedS3, s3_bucket: tuple[str, str], fault: str
) -> None:
    uri = f"s3://{s3_bucket[1]}-missing/x" if fault == "no bucket" else f"s3://{s3_bucket[1]}/x"
    env = s3_agent_env(tmp_path, seaweedfs, uri)
    if fault == "bad secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-key-at-all"
    r = run_agent(tmp_path, ["--job-id", "permanent", "--startup-timeout", "10m"], JOB, env=env)
    assert r.proc.returncode == exits.STORE_UNAVAILABLE == 69, r.stdout + r.stderr
    assert not retries(r)
    assert "\n" not in str(r.event("store.unavailable")["error"])
    assert r.event("store.unavailable").get("exit_code") is None
