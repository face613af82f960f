"""Every catchable signal sent to the agent reaches the job (dumb-init's and tini's cases).

Issue 17, finding 3: only INT, HUP, QUIT and USR2 were forwarded; not as PID 1, the agent
died of 14 others (leaving its job unsupervised) and dropped the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from agent.process.signals import REALTIME, SELF_RAISED, forwarded_signals
from agent.process.supervisor import forwarded_signals as supervisor_forwarded
from tests.agentproc import agent_env, start_agent
from tests.integration.signal_jobs import (
    Recorder,
    agent_process,
    mask_of,
    signal_names,
    unshare_pid,
    wait_until,
)

S = signal.Signals
#: the signals dumb-init's tests send, minus the agent's own (TERM, USR1) and CHLD
EXPECTED_FORWARDED = {
    S.SIGHUP, S.SIGINT, S.SIGQUIT, S.SIGILL, S.SIGTRAP, S.SIGABRT, S.SIGBUS, S.SIGFPE,
    S.SIGUSR2, S.SIGSEGV, S.SIGPIPE, S.SIGALRM, S.SIGSTKFLT, S.SIGCONT, S.SIGTSTP,
    S.SIGTTIN, S.SIGTTOU, S.SIGURG, S.SIGXCPU, S.SIGXFSZ, S.SIGVTALRM, S.SIGPROF,
    S.SIGWINCH, S.SIGIO, S.SIGPWR, S.SIGSYS,
}  # fmt: skip


def test_the_table_forwards_every_signal_but_the_agents_own() -> None:
    owned = {S.SIGTERM, S.SIGUSR1}
    expected = EXPECTED_FORWARDED | REALTIME  # SIGRTMIN..SIGRTMAX: issue 17, item 1
    assert signal_names(forwarded_signals(owned)) == signal_names(expected)
    assert supervisor_forwarded(owned) == forwarded_signals(owned)
    # A sync signal other than SIGUSR1 frees SIGUSR1 for the job (nginx reopens its logs).
    assert S.SIGUSR1 in forwarded_signals({S.SIGTERM, S.SIGUSR2})
    assert S.SIGUSR2 not in forwarded_signals({S.SIGTERM, S.SIGUSR2})


def _send_each(agent_pid: int, recorder: Recorder, proc: subprocess.Popen[str]) -> list[str]:
    """Send every forwarded signal once, each after the previous one arrived; what arrived."""
    sent = []
    for sig in sorted(EXPECTED_FORWARDED):
        os.kill(agent_pid, sig)
        sent.append(sig.name)
        try:
            wait_until(lambda: len(recorder.received()) >= len(sent), 10, f"{sig.name} to arrive")
        except AssertionError:
            if proc.poll() is not None:
                raise AssertionError(f"the agent died of {sig.name} ({proc.returncode})") from None
            got = recorder.received()
            raise AssertionError(f"{sig.name} never reached the job: {got}") from None
    return sent


def test_every_signal_reaches_the_job_when_the_agent_is_not_pid1(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "signals"], rec.command)
    try:
        run.wait_for(rec.ready.exists, what="the job to start")
        sent = _send_each(run.proc.pid, rec, run.proc)
        assert rec.received() == sent
        os.kill(run.proc.pid, signal.SIGUSR1)  # the sync signal: the agent's, not the job's
        run.wait_for(lambda: '"sync.requested"' in run.stdout, what="the requested sync")
        assert psutil.Process(run.proc.pid).is_running()
    finally:
        rec.finish()
    assert run.wait(30) == 0, run.stdout + run.stderr
    assert "SIGUSR1" not in rec.received()
    assert "Traceback" not in run.stderr


def test_every_signal_reaches_the_job_when_the_agent_is_pid1(tmp_path: Path) -> None:
    prefix = unshare_pid()
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "signals"], rec.command, prefix=prefix)
    try:
        agent = agent_process(run.proc.pid)
        run.wait_for(rec.ready.exists, what="the job to start")
        assert int(rec.ready.read_text()) != 1  # the job is not PID 1, the agent is
        sent = _send_each(agent.pid, rec, run.proc)
        assert rec.received() == sent
    finally:
        rec.finish()
    assert run.wait(30) == 0, run.stdout + run.stderr
    assert '"reaper": true' in run.stdout


@pytest.mark.parametrize("sig", [S.SIGSEGV, S.SIGPIPE, S.SIGABRT])
def test_a_signal_the_agent_could_raise_itself_is_forwarded_when_sent(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """These are taken by a sigwaitinfo thread; a kill(2) of them is an ordinary signal."""
    assert sig in SELF_RAISED
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "fault"], rec.command)
    try:
        run.wait_for(rec.ready.exists, what="the job to start")
        for _ in range(3):
            os.kill(run.proc.pid, sig)
        wait_until(lambda: len(rec.received()) >= 1, what=f"{sig.name} at the job")
    finally:
        rec.finish()
    assert run.wait(30) == 0, run.stdout + run.stderr
    assert set(rec.received()) == {sig.name}


def test_kill_9_of_the_agent_takes_the_job_with_it(tmp_path: Path) -> None:
    """Issue 16, item 9: a SIGKILLed agent must not leave its job running unsupervised."""
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "orphan"], rec.command, env=agent_env(tmp_path))
    run.wait_for(rec.ready.exists, what="the job to start")
    job = psutil.Process(int(rec.ready.read_text()))
    run.proc.kill()
    run.wait(10)
    try:
        job.wait(10)
    except psutil.TimeoutExpired:
        job.kill()
        pytest.fail("the job kept running after its agent was killed with SIGKILL")


@pytest.mark.parametrize("sig", [32, 33], ids=["SIGCANCEL", "SIGSETXID"])
def test_glibcs_own_signals_neither_kill_the_agent_nor_reach_the_job(
    tmp_path: Path, sig: int
) -> None:
    """32 and 33 belong to glibc: no handler can be installed, and their default ended the
    agent (exit 160, 161). Ignored by the agent; the job gets them at their default."""
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "glibc"], rec.command)
    try:
        run.wait_for(rec.ready.exists, what="the job to start")
        job_status = Path(f"/proc/{rec.ready.read_text()}/status").read_text()
        assert mask_of(job_status, "SigIgn") & (0b11 << 31) == 0  # an ignore survives exec
        for _ in range(3):
            os.kill(run.proc.pid, sig)
        os.kill(run.proc.pid, signal.SIGUSR2)  # the agent is alive and still forwards
        wait_until(lambda: "SIGUSR2" in rec.received(), 10, "SIGUSR2 at the job")
    finally:
        rec.finish()
    assert run.wait(30) == 0, run.stdout + run.stderr
    assert rec.received() == ["SIGUSR2"]
