"""Options of ``run`` that change how the agent behaves as an init: the sync signal, the
job's own exit 75, the checkpoint dir's lock, and the agent's working directory."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

from tests.agentproc import run_agent, start_agent

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def test_another_sync_signal_forwards_sigusr1_to_the_job(tmp_path: Path) -> None:
    job = py("""
        import os, signal, sys, time
        got = []
        signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
        print("ready", os.environ["SPOT_AGENT_SYNC_SIGNAL"], flush=True)
        while not got:
            time.sleep(0.01)
        print("got SIGUSR1", flush=True)
        open(os.path.join(os.environ["CHECKPOINT_DIR"], "f"), "w").write("x")
        os.kill(int(os.environ["SPOT_AGENT_PID"]), signal.SIGUSR2)
        time.sleep(600)
    """)
    r = start_agent(tmp_path, ["--job-id", "usr", "--sync-signal", "SIGUSR2"], job)
    r.wait_for(lambda: r.has_line("ready SIGUSR2"), what="the job to start")
    r.signal(signal.SIGUSR1)
    r.wait_for(lambda: r.has_line("got SIGUSR1"), what="SIGUSR1 to reach the job")
    r.wait_for(lambda: any(e["event"] == "sync.committed" for e in r.events()), what="the sync")
    assert r.event("sync.requested")["by"] == "SIGUSR2"
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 75


def test_a_real_time_sync_signal_is_the_one_the_job_api_sends(tmp_path: Path) -> None:
    # The agent names it as kill -l does (SIGRTMIN+2), which signal.Signals cannot look up:
    # the API once fell back to SIGUSR1, which the agent then forwarded to the job instead.
    job = py("""
        import os, pathlib, sys, time
        import checkpoint
        print("ready", os.environ["SPOT_AGENT_SYNC_SIGNAL"], flush=True)
        pathlib.Path(os.environ["CHECKPOINT_DIR"], "f").write_text("x")
        if not checkpoint.request_sync(wait=60):
            sys.exit("the sync did not start")
        print("sync started", flush=True)
        time.sleep(600)
    """)
    r = start_agent(tmp_path, ["--job-id", "rt", "--sync-signal", "SIGRTMIN+2"], job)
    r.wait_for(lambda: r.has_line("sync started"), what="the requested sync to start")
    assert r.has_line("ready SIGRTMIN+2")
    assert r.event("sync.requested")["by"] == "SIGRTMIN+2"
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 75


def test_the_jobs_own_exit_75_can_be_told_apart(tmp_path: Path) -> None:
    job = py("import sys; sys.exit(75)")
    assert run_agent(tmp_path, ["--job-id", "e75"], job).proc.returncode == 75
    remapped = run_agent(tmp_path, ["--job-id", "e75", "--job-exit-75-as", "3"], job)
    assert remapped.proc.returncode == 3
    assert remapped.event("child.exited")["exit_code"] == 75


def test_a_second_agent_on_the_same_checkpoint_dir_is_refused(tmp_path: Path) -> None:
    job = py("import time; print('ready', flush=True); time.sleep(600)")
    first = start_agent(tmp_path, ["--job-id", "twice"], job)
    first.wait_for(lambda: first.has_line("ready"), what="the first job")
    second = run_agent(tmp_path, ["--job-id", "twice"], job)
    assert second.proc.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("spot-agent: error: --checkpoint-dir (SPOT_AGENT_CHECKPOINT_DIR)")
    assert f"pid {first.proc.pid}" in lines[0]
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 75
    # the lock goes with the agent: the next attempt starts
    assert run_agent(tmp_path, ["--job-id", "twice"], py("pass")).proc.returncode == 0


def test_the_agent_leaves_its_start_directory_and_the_job_keeps_it(tmp_path: Path) -> None:
    job = py("import os, time; print('cwd', os.getcwd(), flush=True); time.sleep(600)")
    r = start_agent(tmp_path, ["--job-id", "cwd"], job)
    r.wait_for(lambda: r.has_line(f"cwd {tmp_path}"), what="the job to start in tmp_path")
    r.wait_for(lambda: os.readlink(f"/proc/{r.proc.pid}/cwd") == "/", what="the agent's chdir")
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 75
