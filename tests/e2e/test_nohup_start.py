"""``nohup spot-agent run ...``: a hang-up while the agent starts (the claim made slow for
real by a fault proxy in front of SeaweedFS) does not stop it, as it would not stop the job
``nohup`` protects; without nohup it stops the agent, as before."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentproc import start_agent
from tests.faultproxy import FaultProxy, fault_proxy
from tests.servers import SeaweedS3
from tests.stores import s3_agent_env

STALL = 5.0  # the claim's first request waits this long: the job cannot have started


@pytest.fixture
def proxy(seaweedfs: SeaweedS3) -> Iterator[FaultProxy]:
    with fault_proxy(seaweedfs.endpoint) as p:
        yield p


@pytest.mark.parametrize("under_nohup", [True, False])
def test_a_hangup_before_the_job_starts(
    tmp_path: Path,
    seaweedfs: SeaweedS3,
    s3_bucket: tuple[str, str],
    proxy: FaultProxy,
    under_nohup: bool,
) -> None:
    nohup = shutil.which("nohup")
    if nohup is None:
        pytest.skip("no nohup here")
    env = s3_agent_env(tmp_path, seaweedfs, f"s3://{s3_bucket[1]}/nohup")
    env["AWS_ENDPOINT_URL_S3"] = proxy.url
    assert proxy.url.startswith("http://127.0.0.1:")
    proxy.inject("stall", 1, seconds=STALL)
    r = start_agent(
        tmp_path,
        ["--job-id", f"nohup-{under_nohup}"],
        ["sh", "-c", "sleep 1; echo job done"],
        env=env,
        prefix=[nohup] if under_nohup else [],
    )
    r.wait_for(lambda: proxy.faults >= 1, what="the stalled claim")
    r.signal(signal.SIGHUP)
    code = r.wait(60)
    if under_nohup:
        assert code == 0, r.stdout + r.stderr
        assert r.event("signal.held")["signal"] == "SIGHUP"
        assert r.has_line("job done")  # it got the hang-up too, and ignored it as nohup asks
    else:
        assert code == 128 + signal.SIGHUP, r.stdout + r.stderr
        assert r.event("agent.stopping")["signal"] == "SIGHUP"
