"""Signals while the agent starts, and the signal state it inherits (tini's sigconf test).

Issue 17, finding 4: HUP, INT, QUIT, USR1, USR2 and ALRM in the first tenths of a second
killed the agent before its job started. Finding 5: an inherited blocked SIGTERM was never
unblocked (the agent ignored ``kill -TERM``), and the job inherited the agent's mask.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.run.meanings import STOP_BEFORE_START
from tests.agentproc import start_agent
from tests.integration.signal_jobs import Recorder, catches, mask_of, wait_until

S = signal.Signals


def agents_own(stderr: str) -> str:
    """The agent's stderr without the job's own death report: a Ctrl-C forwarded while the
    job's interpreter is still starting (before any handler of its own) ends it with a
    KeyboardInterrupt traceback of its own, as it would outside the agent."""
    if stderr.rstrip().endswith("KeyboardInterrupt") and "/agent/" not in stderr:
        return ""
    return stderr


@pytest.mark.parametrize("delay", [0.0, 0.25])
@pytest.mark.parametrize(
    "sig", [S.SIGHUP, S.SIGINT, S.SIGQUIT, S.SIGUSR1, S.SIGUSR2, S.SIGALRM], ids=lambda s: s.name
)
def test_a_signal_while_the_agent_starts_does_not_kill_it(
    tmp_path: Path, sig: signal.Signals, delay: float
) -> None:
    """From the entry point's first line (it catches SIGTERM then), whatever comes next."""
    rec = Recorder(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "early"], rec.command)
    # Before its first line the interpreter itself starts (site, the path): no code of ours
    # can run then. Python catches no SIGTERM by itself: a caught one means we are running.
    run.wait_for(lambda: catches(run.proc.pid, S.SIGTERM), what="the entry point")
    time.sleep(delay)
    run.signal(sig)
    try:
        if sig == S.SIGINT:
            # Ctrl-C before the job started stops the agent cleanly; after, it is the job's.
            wait_until(
                lambda: run.proc.poll() is not None or "SIGINT" in rec.received(),
                30,
                "a stop or the job to receive SIGINT",
            )
        elif sig == S.SIGUSR1:  # the sync signal: a checkpoint once the job runs, else nothing
            run.wait_for(
                lambda: '"sync.requested"' in run.stdout or '"sync.ignored"' in run.stdout,
                what="the sync request taken or ignored",
            )
        else:
            # Held until the job exists, then sent: it may come before the job's handlers,
            # and then the job dies of it (as it would of a signal sent to it then).
            wait_until(
                lambda: run.proc.poll() is not None or sig.name in rec.received(),
                30,
                f"{sig.name} at the job",
            )
    finally:
        rec.finish()
    code = run.wait(30)
    assert code >= 0, f"the agent died of {signal.Signals(-code).name}"
    assert "Traceback" not in agents_own(run.stderr), run.stderr
    assert run.event("agent.exit")["exit_code"] == code
    if sig in STOP_BEFORE_START and '"child.started"' not in run.stdout:
        # Ctrl-C, a hang-up or Ctrl-\ before the job exists stops the agent cleanly.
        assert code == 128 + sig, run.stdout + run.stderr
        assert not rec.ready.exists()
    elif sig == S.SIGUSR1:
        assert code == 0 and rec.received() == [], run.stdout + run.stderr
    elif code == 0:
        assert rec.received() == [sig.name]  # held, then sent once
    else:  # the job died of it before it could catch it
        died = {128 + sig}
        if sig == S.SIGINT and agents_own(run.stderr) != run.stderr:
            # Ctrl-C inside the job's interpreter start-up (site): Python reports the
            # KeyboardInterrupt and exits 1 there, before it can re-raise the signal.
            died.add(1)
        assert code in died, run.stdout + run.stderr
        assert run.event("child.exited")["exit_code"] == code


#: exec the command after it with SIGTERM blocked and SIGINT, SIGHUP, SIGQUIT ignored
INHERIT = textwrap.dedent(
    """
    import os, signal, sys
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR2})
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    os.execv(sys.argv[1], sys.argv[1:])
    """
)


def test_inherited_blocked_and_ignored_signals_stay_with_the_job_not_the_agent(
    tmp_path: Path,
) -> None:
    """As tini: the job starts with what the agent's parent ignored or blocked (the stop
    signal, SIGTERM, excepted: it must reach the job), while the agent catches them all."""
    wrapper = [sys.executable, "-c", INHERIT]
    status = tmp_path / "job-status"
    job = [
        sys.executable,
        "-c",
        f"import time; open({str(status)!r}, 'w').write(open('/proc/self/status').read());"
        " time.sleep(60)",
    ]
    run = start_agent(tmp_path, ["--job-id", "mask"], job, prefix=wrapper)
    run.wait_for(lambda: status.exists() and "SigIgn" in status.read_text(), what="the job")
    seen = status.read_text()
    assert mask_of(seen, "SigBlk") == 1 << (S.SIGUSR2 - 1), "only the parent's SIGUSR2"
    ignored = mask_of(seen, "SigIgn")
    for sig in (S.SIGINT, S.SIGHUP, S.SIGQUIT):
        assert ignored & (1 << (sig - 1)), f"{sig.name} is no longer ignored for the job"
    agent_blocked = mask_of(Path(f"/proc/{run.proc.pid}/status").read_text(), "SigBlk")
    assert not agent_blocked & (1 << (S.SIGTERM - 1))
    run.signal(signal.SIGTERM)  # the notice must get through: stop the job, exit 75
    assert run.wait(60) == 75, run.stdout + run.stderr
    assert run.event("notice.interruption")["source"] == "sigterm"


def test_a_sigterm_blocked_by_the_caller_before_exec_is_still_a_notice(tmp_path: Path) -> None:
    """tini's sigconf case, through the whole entry point: blocked from the first instruction."""
    wrapper = [sys.executable, "-c", INHERIT]
    run = start_agent(tmp_path, ["--job-id", "blocked"], ["sleep", "60"], prefix=wrapper)
    run.wait_for(lambda: '"child.started"' in run.stdout, what="the job to start")
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(60) == 75, run.stdout + run.stderr


def test_early_records_signals_in_arrival_order_and_unblocks_the_inheritedmask_of() -> None:
    code = textwrap.dedent(
        """
        import os, signal, sys, time
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGHUP})
        from agent.process import early
        from agent.process.signals import WAITED
        early.install(["spot-agent", "run"])
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        assert blocked == set(WAITED), blocked
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTERM, signal.SIGALRM):
            os.kill(os.getpid(), sig)
        os.kill(os.getpid(), signal.SIGSEGV)  # taken by the sigwait thread
        time.sleep(0.3)
        for _ in range(3):  # queued, and taken one delivery at a time: all three are kept
            os.kill(os.getpid(), signal.SIGRTMIN + 3)
        os.kill(os.getpid(), signal.SIGRTMAX)
        time.sleep(0.5)
        taken = early.take()
        times = [t for _, t in taken]
        assert times == sorted(times) and early.take() == []
        print(" ".join(s.name for s, _ in taken))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["SIGHUP", "SIGUSR2", "SIGTERM", "SIGALRM", "SIGSEGV"] + [
        "SIGRTMIN+3"
    ] * 3 + ["SIGRTMAX"]
