"""A warm restart through the whole entrypoint, S3 (SeaweedFS on 127.0.0.1) behind a proxy
that counts requests: the agent proves the checkpoint dir holds the checkpoint from its
local index, reads no file and asks the store only a handful of questions."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.agentproc import run_agent, start_agent
from tests.faultproxy import FaultProxy, Rule
from tests.servers import SeaweedS3
from tests.stores import s3_agent_env

PY = sys.executable
FILES = 40
#: the job: makes its files (old mtimes) the first time, asks for a sync, then either
#: waits to be killed or exits 0
_JOB = textwrap.dedent(f"""
    import os, pathlib, signal, sys, time
    d = pathlib.Path(os.environ["CHECKPOINT_DIR"])
    if not (d / "f000").exists():
        for i in range({FILES}):
            (d / f"f{{i:03d}}").write_bytes(os.urandom(20_000 + i))
            os.utime(d / f"f{{i:03d}}", ns=(1_600_000_000 * 10**9,) * 2)
        time.sleep(0.02)
        os.kill(int(os.environ["SPOT_AGENT_PID"]), signal.SIGUSR1)
    print("job started", flush=True)
    if sys.argv[1:] == ["wait"]:
        time.sleep(600)
""")


class RecordingProxy(FaultProxy):
    """The fault proxy with no faults, keeping each request's method and path."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.seen: list[tuple[str, str]] = []

    def take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self.seen.append((method, path))
        return super().take(method, path)


@pytest.fixture
def proxy(seaweedfs: SeaweedS3) -> Iterator[RecordingProxy]:
    p = RecordingProxy(seaweedfs.endpoint).start()
    try:
        yield p
    finally:
        p.stop()


def _env(tmp: Path, weed: SeaweedS3, bucket: str, proxy: RecordingProxy) -> dict[str, str]:
    env = s3_agent_env(tmp, weed, f"s3://{bucket}/warm")
    env["AWS_ENDPOINT_URL_S3"] = proxy.url
    return env


def _warm_restart(tmp: Path, env: dict[str, str], proxy: RecordingProxy) -> None:
    proxy.seen.clear()
    second = run_agent(tmp, ["--job-id", "w"], [PY, str(tmp / "job.py")], env=env)
    assert second.proc.returncode == 0, second.stderr
    restored = second.event("restore.done")
    assert restored["files"] == FILES
    assert restored["files_already_present"] == FILES
    assert restored["files_indexed"] == FILES
    assert restored["bytes_hashed"] == 0 and restored["files_downloaded"] == 0
    kinds = sorted(f"{m} {p.split('?')[0]}" for m, p in proxy.seen)
    # a handful of reads, whatever the size; the run's own records (attempt claim, lease,
    # timeline) are small writes besides, and nothing else is written: nothing changed
    reads = [k for k in kinds if k.split()[0] in ("GET", "HEAD")]
    assert len(reads) <= 10, kinds
    data = ("/blobs/", "/packs/", "/pages/", "/manifests/")
    assert not [k for k in kinds if k not in reads and any(d in k for d in data)], kinds
    assert not [k for k in kinds if k.startswith("HEAD") and "/blobs/" in k], kinds
    # the last sync read nothing either: nothing changed, nothing committed
    assert second.event("sync.unchanged")["bytes_hashed"] == 0


def test_warm_restart_after_a_clean_exit_reads_nothing(
    tmp_path: Path, seaweedfs: SeaweedS3, s3_bucket: tuple[str, str], proxy: RecordingProxy
) -> None:
    (tmp_path / "job.py").write_text(_JOB)
    env = _env(tmp_path, seaweedfs, s3_bucket[1], proxy)
    first = run_agent(tmp_path, ["--job-id", "w"], [PY, str(tmp_path / "job.py")], env=env)
    assert first.proc.returncode == 0, first.stderr
    assert first.event("sync.committed")["files"] == FILES
    _warm_restart(tmp_path, env, proxy)
    _warm_restart(tmp_path, env, proxy)  # and again: the restore kept the index whole


def test_warm_restart_after_the_agent_was_killed_reads_nothing(
    tmp_path: Path, seaweedfs: SeaweedS3, s3_bucket: tuple[str, str], proxy: RecordingProxy
) -> None:
    """kill -9 leaves the freeze area's hard links behind; the next start removes them,
    which moves every file's ctime: the index is carried across that."""
    (tmp_path / "job.py").write_text(_JOB)
    env = _env(tmp_path, seaweedfs, s3_bucket[1], proxy)
    first = start_agent(tmp_path, ["--job-id", "w"], [PY, str(tmp_path / "job.py"), "wait"], env)
    first.wait_for(lambda: '"sync.committed"' in first.stdout, timeout=60, what="a commit")
    area = tmp_path / "state" / "spot-agent" / "jobs" / "w" / "checkpoint" / ".spot-agent"
    assert (area / "freeze").is_dir()
    tree = psutil.Process(first.proc.pid).children(recursive=True)
    first.signal(signal.SIGKILL)
    first.wait(30)
    for p in tree:
        os.kill(p.pid, signal.SIGKILL)
    _warm_restart(tmp_path, env, proxy)
