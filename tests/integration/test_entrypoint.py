"""entrypoint.sh, run as a container runs it: ``sh entrypoint.sh COMMAND...``.

``spot-agent`` on PATH is a shim that execs this checkout's agent, so the chain
sh -> spot-agent -> python keeps one process: the one a platform signals.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.agentproc import REPO, AgentRun, agent_env, track

ENTRYPOINT = REPO / "entrypoint.sh"


def _env(tmp: Path) -> dict[str, str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "spot-agent"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m agent "$@"\n')
    shim.chmod(0o755)
    env = agent_env(tmp)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["SPOT_AGENT_JOB_ID"] = "entry"
    return env


def _start(tmp: Path, *command: str) -> tuple[subprocess.Popen[str], Path]:
    """Start the entrypoint; the autouse fixture stops it (and its job) after the test."""
    out = tmp / "out.log"
    with open(out, "w") as o:
        proc = subprocess.Popen(
            ["sh", str(ENTRYPOINT), *command],
            stdout=o,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(tmp),
            cwd=tmp,
            text=True,
        )
    track(AgentRun(proc, out, out))
    return proc, out


def test_exit_code_and_arguments_pass_through(tmp_path: Path) -> None:
    code = "import sys; print('argv', sys.argv[1:], flush=True); sys.exit(7)"
    proc, out = _start(tmp_path, sys.executable, "-c", code, "two words", "*")
    assert proc.wait(60) == 7, out.read_text()
    assert "argv ['two words', '*']" in out.read_text().splitlines()


def test_sigterm_reaches_the_agent_which_exits_75(tmp_path: Path) -> None:
    job = textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("job running", flush=True)
        while True:
            time.sleep(0.05)
    """)
    proc, out = _start(tmp_path, sys.executable, "-c", job)
    t0 = time.monotonic()
    while "job running" not in out.read_text():
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() - t0 < 30, out.read_text()
        time.sleep(0.05)
    # exec all the way down: the shell's pid is the agent's
    assert f'"pid": {proc.pid}' in out.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 75, out.read_text()
    assert '"event": "agent.exit"' in out.read_text()


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    proc, out = _start(tmp_path)
    assert proc.wait(60) == 2
    assert "no command given" in out.read_text()


def test_an_agent_left_running_by_a_failed_test_is_stopped(tmp_path: Path) -> None:
    """What the autouse fixture does after a test that failed half way."""
    from tests.agentproc import stop_leftovers

    proc, out = _start(tmp_path, sys.executable, "-c", "import time; time.sleep(600)")
    t0 = time.monotonic()
    while '"event": "child.started"' not in out.read_text():
        assert proc.poll() is None and time.monotonic() - t0 < 30, out.read_text()
        time.sleep(0.05)
    assert stop_leftovers() == 1
    assert proc.poll() is not None
