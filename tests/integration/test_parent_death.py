"""What becomes of the job's descendants when the agent is killed with SIGKILL.

Issue 17, item 2. Nothing in a SIGKILLed process runs again, so only the kernel or another
process can end what its job started. The kernel does it for a PID namespace: when its PID 1
ends, every process in it is killed. So the job's whole tree (a child in its process group,
a ``setsid`` daemon that left it) ends with the agent when the agent is PID 1, or when the
PID 1 of its namespace ends with it (``docker run --init``, a shell that did not ``exec``,
``unshare --kill-child``). Not PID 1 and outside such a namespace, the job itself dies (its
parent-death signal) but its descendants outlive it: docs/container.md, "When the agent is
killed".
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.agentproc import AGENT, start_agent
from tests.integration.signal_jobs import unshare_pid, wait_until

#: the job: a child in its process group and a daemon that left it (a session of its own)
JOB = ["sh", "-c", "sleep 3001 & setsid sleep 3002 & wait"]
GRANDCHILDREN = (["sleep", "3001"], ["sleep", "3002"])


def _find(root: int, cmdline: list[str]) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process(root).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.cmdline()[: len(cmdline)] == cmdline:
                    return p
    return None


def _wait_for(root: int, cmdline: list[str]) -> psutil.Process:
    wait_until(lambda: _find(root, cmdline) is not None, 30, f"{cmdline} under {root}")
    found = _find(root, cmdline)
    assert found is not None
    return found


def _dead(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _the_tree(launcher: int) -> tuple[psutil.Process, list[psutil.Process]]:
    """The agent under ``launcher``, and the job's two grandchildren once both run."""
    agent = _wait_for(launcher, AGENT[:3])
    return agent, [_wait_for(agent.pid, c) for c in GRANDCHILDREN]


def test_as_pid1_kill_9_of_the_agent_ends_the_jobs_whole_tree(tmp_path: Path) -> None:
    run = start_agent(tmp_path, ["--job-id", "pid1-kill9"], JOB, prefix=unshare_pid())
    agent, grandchildren = _the_tree(run.proc.pid)
    try:
        assert os.getpgid(grandchildren[1].pid) != os.getpgid(grandchildren[0].pid)  # setsid
        agent.send_signal(signal.SIGKILL)
        wait_until(lambda: all(_dead(p) for p in grandchildren), 20, "the job's tree to end")
    finally:
        _kill(grandchildren)
    run.wait(20)  # unshare(1) ends with its child
    assert _dead(agent)


@pytest.mark.parametrize("launcher", ["init-that-ends-with-the-agent", "unshare-kill-child"])
def test_under_a_pid_namespace_that_ends_with_the_agent_its_whole_tree_ends(
    tmp_path: Path, launcher: str
) -> None:
    """The documented setups for an agent that is not PID 1 (or is killed from outside)."""
    if launcher == "init-that-ends-with-the-agent":
        # PID 1 is a shell that waits for the agent (as tini does under `docker run --init`)
        # and exits when it does; the agent itself is PID 2.
        prefix = [*unshare_pid(), "sh", "-c", '"$@"; exit $?', "sh"]
    else:
        # On a host: the agent is PID 1 of its own namespace, and dies with the unshare(1)
        # that started it (here that unshare is what gets the SIGKILL).
        prefix = [*unshare_pid(), "--kill-child"]
    run = start_agent(tmp_path, ["--job-id", "ns-kill9"], JOB, prefix=prefix)
    agent, grandchildren = _the_tree(run.proc.pid)
    try:
        if launcher == "init-that-ends-with-the-agent":
            assert agent.ppid() != run.proc.pid  # the shell is its parent: not PID 1
            agent.send_signal(signal.SIGKILL)
        else:
            run.proc.kill()
        wait_until(lambda: all(_dead(p) for p in grandchildren), 20, "the job's tree to end")
        assert _dead(agent)
    finally:
        _kill(grandchildren)


def test_not_pid1_kill_9_ends_the_job_but_not_what_it_started(tmp_path: Path) -> None:
    """The limitation, as documented: the job dies of its parent-death signal (SIGKILL);
    its children are re-parented (to the nearest subreaper or init) and keep running, in
    its process group or not. The agent being a subreaper does not help: a subreaper
    adopts orphans while it lives, and its own orphans go up to the next one."""
    run = start_agent(tmp_path, ["--job-id", "kill9"], JOB)
    job = _wait_for(run.proc.pid, JOB)
    grandchildren = [_wait_for(job.pid, c) for c in GRANDCHILDREN]
    try:
        run.proc.kill()
        run.wait(20)
        wait_until(lambda: _dead(job), 20, "the job to die with the agent")
        for p in grandchildren:
            assert not _dead(p), f"{p.cmdline()} ended too: update docs/container.md"
            assert p.ppid() not in (run.proc.pid, job.pid)
    finally:
        _kill(grandchildren)
