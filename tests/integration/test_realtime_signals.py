"""Real-time signals (SIGRTMIN..SIGRTMAX) reach the job like every other signal.

Issue 17, item 1: the signal table was typed ``signal.Signals``, which has no members for
most of them, so none was caught: not PID 1, the agent died of any (their default action
ends a process), leaving its job unsupervised; as PID 1 the kernel dropped them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from agent.config.parsers import parse_signal, parse_sync_signal
from agent.process.signals import REALTIME, RTMAX, RTMIN, WAITED, Sig, forwarded_signals
from tests.agentproc import start_agent
from tests.integration.signal_jobs import (
    Recorder,
    agent_process,
    catches,
    recorded_name,
    unshare_pid,
    wait_until,
)


def test_every_realtime_signal_is_forwarded_and_taken_one_delivery_at_a_time() -> None:
    assert (RTMIN, RTMAX) == (signal.SIGRTMIN, signal.SIGRTMAX)
    assert set(range(RTMIN, RTMAX + 1)) == REALTIME <= forwarded_signals({signal.SIGTERM})
    assert REALTIME <= WAITED  # sigwaitinfo: a queued delivery is never merged with the next
    # The sync signal may be a real-time one; then it is the agent's, not the job's.
    assert RTMIN + 2 not in forwarded_signals({signal.SIGTERM, RTMIN + 2})


def test_realtime_signals_are_named_as_kill_l_names_them() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    for n in range(RTMIN, RTMAX + 1):
        out = subprocess.run([bash, "-c", f"kill -l {n}"], capture_output=True, text=True)
        assert Sig(n).name == "SIG" + out.stdout.strip(), n
        assert parse_signal(Sig(n).name) == n and parse_signal(out.stdout.strip()) == n
    assert Sig(signal.SIGUSR1).name == "SIGUSR1"


@pytest.mark.parametrize(
    ("raw", "number"),
    [("SIGRTMIN+2", RTMIN + 2), ("rtmin+1", RTMIN + 1), ("RTMAX-1", RTMAX - 1), ("40", 40)],
)
def test_the_sync_signal_can_be_a_realtime_one(raw: str, number: int) -> None:
    assert parse_sync_signal(raw) == number


@pytest.mark.parametrize("raw", ["SIGRTMIN+31", "RTMAX+1", "RTMIN-1", "32", "33", "65"])
def test_a_realtime_signal_out_of_range_is_one_line_naming_it(raw: str) -> None:
    with pytest.raises(ValueError, match=r"signal") as err:
        parse_sync_signal(raw)
    assert "\n" not in str(err.value)


def _send_every_realtime_signal(agent_pid: int, rec: Recorder, proc: subprocess.Popen[str]) -> None:
    sent: list[str] = []
    for n in range(RTMIN, RTMAX + 1):
        os.kill(agent_pid, n)
        sent.append(str(n))
        try:
            wait_until(lambda: len(rec.received()) >= len(sent), 10, f"{Sig(n).name} to arrive")
        except AssertionError:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the agent died of {Sig(n).name} ({proc.returncode})"
                ) from None
            raise AssertionError(f"{Sig(n).name} never reached the job: {rec.received()}") from None
    assert rec.received() == sent


@pytest.mark.parametrize("pid1", [False, True], ids=["not-pid1", "pid1"])
def test_every_realtime_signal_reaches_the_job(tmp_path: Path, pid1: bool) -> None:
    prefix = unshare_pid() if pid1 else []
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "realtime"], rec.command, prefix=prefix)
    try:
        agent = agent_process(run.proc.pid) if pid1 else None
        run.wait_for(rec.ready.exists, what="the job to start")
        _send_every_realtime_signal(agent.pid if agent else run.proc.pid, rec, run.proc)
    finally:
        rec.finish()
    assert run.wait(30) == 0, run.stdout + run.stderr
    forwarded = [e["signal"] for e in run.events() if e.get("event") == "signal.forwarded"]
    assert forwarded == [Sig(n).name for n in range(RTMIN, RTMAX + 1)]


@pytest.mark.parametrize("pid1", [False, True], ids=["not-pid1", "pid1"])
def test_each_queued_delivery_of_a_realtime_signal_is_forwarded(tmp_path: Path, pid1: bool) -> None:
    """The kernel queues real-time signals rather than merging them; so does the agent."""
    prefix = unshare_pid() if pid1 else []
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "queued"], rec.command, prefix=prefix)
    sig, times = RTMIN + 5, 25
    try:
        agent = agent_process(run.proc.pid) if pid1 else None
        run.wait_for(rec.ready.exists, what="the job to start")
        for _ in range(times):  # as fast as kill(2) goes: many arrive before any is taken
            os.kill(agent.pid if agent else run.proc.pid, sig)
        wait_until(lambda: len(rec.received()) >= times, 20, f"{times} x {Sig(sig).name}")
    finally:
        rec.finish()
    assert run.wait(30) == 0, run.stdout + run.stderr
    assert rec.received() == [recorded_name(sig)] * times


def test_a_realtime_signal_while_the_agent_starts_is_held_then_delivered(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "early-rt"], rec.command)
    sig = Sig(RTMIN + 3)
    run.wait_for(lambda: catches(run.proc.pid, signal.SIGTERM), what="the entry point")
    run.signal(sig)
    try:
        # Sent the moment the job exists: it may come before the job blocks it, and then the
        # job dies of it (as it would of a signal sent to it then): delivered either way.
        wait_until(
            lambda: run.proc.poll() is not None or str(sig) in rec.received(),
            30,
            f"{sig.name} at the job",
        )
    finally:
        rec.finish()
    code = run.wait(30)
    assert "Traceback" not in run.stderr, run.stderr
    held = run.event("signal.held")
    assert held["signal"] == "SIGRTMIN+3"
    forwarded = run.event("signal.forwarded")
    assert forwarded["signal"] == "SIGRTMIN+3" and forwarded["held"] is True
    if code == 0:
        assert rec.received() == [str(sig)]
    else:
        assert code == 128 + sig == run.event("child.exited")["exit_code"], run.stdout


def test_a_realtime_sync_signal_asks_for_a_checkpoint_and_frees_sigusr1(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "rt-sync", "--sync-signal", "SIGRTMIN+2"], rec.command)
    try:
        run.wait_for(rec.ready.exists, what="the job to start")
        run.signal(RTMIN + 2)
        run.wait_for(lambda: '"sync.requested"' in run.stdout, what="the requested sync")
        assert run.event("sync.requested")["by"] == "SIGRTMIN+2"
        run.signal(signal.SIGUSR1)  # no longer the agent's: the job's, like the rest
        wait_until(lambda: "SIGUSR1" in rec.received(), 10, "SIGUSR1 at the job")
    finally:
        rec.finish()
    assert run.wait(30) == 0, run.stdout + run.stderr
    assert rec.received() == ["SIGUSR1"]
