"""The agent on a terminal, as under ``docker run -it`` or an interactive shell (tini's tty cases).

Issue 17, finding 2: the terminal was given to the job by the agent after the exec, so a
job-control shell (``bash -m``, ``bash -i``, ``dash -i``) could meet SIGTTIN first and stay
stopped (4 runs in 10); and nothing handled a stopped job, so Ctrl-Z hung the terminal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil
import pytest

from tests.agentproc import AGENT, agent_env
from tests.integration.signal_jobs import PY, Recorder, state, unshare_pid, wait_until

#: runs per shell: enough to catch a race that loses one run in five (0.8^15 < 4 %)
RUNS = 15


def _controlling_terminal() -> None:
    # start_new_session made us a session leader: take stdin, the pty, as our terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """A program running on a pseudo-terminal as the session leader (a terminal emulator's
    shell, or the agent as PID 1 of ``docker run -it``); the test types and reads."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, rows: int = 24
    ) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, 80)
        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_controlling_terminal,
        )
        os.close(slave)
        self._output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every slave end closed
                return
            if not data:
                return
            self._output += data

    @property
    def output(self) -> str:
        return self._output.decode(errors="replace")

    def type(self, text: str | bytes) -> None:
        os.write(self.master, text.encode() if isinstance(text, str) else text)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def expect(self, text: str, timeout: float = 20, after: int = 0) -> int:
        """Wait for ``text`` in the output past offset ``after``; the offset past it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.output.find(text, after)
            if found >= 0:
                return found + len(text)
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} on the terminal; it shows:\n{self.output[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            with_tree = [self.proc.pid]
            with contextlib.suppress(psutil.Error):
                with_tree += [p.pid for p in psutil.Process(self.proc.pid).children(True)]
            for pid in with_tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)
        os.close(self.master)
        self._reader.join(5)


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name}): its tty case cannot run")
    return path


SHELLS = {
    # interactive shells read "exit 7" from the terminal: only in its foreground can they
    "bash -i": (["bash", "--norc", "--noprofile", "-i"], "exit 7\n"),
    "dash -i": (["dash", "-i"], "exit 7\n"),
    # job control without a prompt: bash checks at start that it owns the terminal
    "bash -m": (["bash", "--norc", "--noprofile", "-m", "-c", "sleep 0.05; exit 7"], ""),
}


#: terminals started at once: the runs also race each other for the CPU, as in a busy host
BATCH = 5


def _hung(term: Terminal) -> str:
    stopped = [p.pid for p in psutil.Process(term.proc.pid).children(True) if state(p.pid) == "T"]
    return f"hung, stopped processes {stopped}:\n{term.output}"


@pytest.mark.parametrize("as_pid1", [False, True], ids=["", "pid1"])
@pytest.mark.parametrize("variant", list(SHELLS))
def test_a_job_control_shell_starts_in_the_foreground(
    tmp_path: Path, variant: str, as_pid1: bool
) -> None:
    """``docker run -it IMAGE bash``: as PID 1, or under a terminal's shell."""
    argv, typed = SHELLS[variant]
    shell = [_shell(argv[0]), *argv[1:]]
    prefix: list[str] = []
    if as_pid1:
        # PID 1 of a new PID namespace, and the leader of a session on the pty, as the
        # container's init is under `docker run -it`.
        setsid = shutil.which("setsid")
        if setsid is None:
            pytest.skip("setsid(1) is not installed: cannot give PID 1 the terminal")
        prefix = [*unshare_pid(), setsid, "--ctty"]
    env = agent_env(tmp_path, {"PS1": "$ ", "ENV": "", "TERM": "dumb"})
    for first in range(0, RUNS, BATCH):
        runs = range(first, min(first + BATCH, RUNS))
        terms = [
            Terminal([*prefix, *AGENT, "run", "--job-id", f"tty{n}", "--", *shell], env, tmp_path)
            for n in runs
        ]
        try:
            for term in terms:
                if typed:
                    term.type(typed)  # typed ahead: it waits until the shell reads the terminal
            for n, term in zip(runs, terms, strict=True):
                try:
                    code = term.proc.wait(30)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"run {n + 1}: {_hung(term)}")
                assert code == 7, f"run {n + 1}:\n{term.output}"
        finally:
            for term in terms:
                term.close()


TICKER = """
import pathlib, sys, time
ticks, stop = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
n = 0
while not stop.exists():
    n += 1
    ticks.write_text(str(n))
    time.sleep(0.05)
"""


def _ticks(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def test_ctrl_z_gives_the_prompt_back_and_fg_resumes_agent_and_job(tmp_path: Path) -> None:
    bash = _shell("bash")
    ticker, ticks, stop = tmp_path / "ticker.py", tmp_path / "ticks", tmp_path / "stop"
    ticker.write_text(TICKER)
    env = agent_env(tmp_path, {"PS1": "PROMPT$ ", "TERM": "dumb"})
    term = Terminal([bash, "--norc", "--noprofile", "-i"], env, tmp_path)
    try:
        at = term.expect("PROMPT$ ")
        agent_cmd = [
            *AGENT,
            "run",
            "--job-id",
            "ctrlz",
            "--",
            PY,
            str(ticker),
            str(ticks),
            str(stop),
        ]
        term.type(" ".join(agent_cmd) + " > agent.out 2>&1\n")
        wait_until(lambda: _ticks(ticks) > 0, what="the job to tick")
        shell = psutil.Process(term.proc.pid)
        agent = next(p for p in shell.children() if "agent" in p.cmdline())
        job = next(p for p in agent.children() if str(ticker) in p.cmdline())
        for cycle in range(3):
            term.type(b"\x1a")  # Ctrl-Z
            at = term.expect("Stopped", after=at)
            at = term.expect("PROMPT$ ", after=at)  # the prompt is back
            assert state(agent.pid) == "T" and state(job.pid) == "T", f"cycle {cycle + 1}"
            frozen = _ticks(ticks)
            term.type("fg\n")
            wait_until(
                lambda f=frozen: _ticks(ticks) > f + 2, what=f"the job to resume ({cycle + 1})"
            )
            assert state(agent.pid) != "T"
        stop.write_text("")
        term.type("echo rc=$?\n")
        term.expect("rc=0", after=at)
        term.type("exit\n")
        term.proc.wait(20)
    finally:
        stop.write_text("")
        term.close()


def test_a_terminal_resize_reaches_the_job(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    env = agent_env(tmp_path, {"TERM": "dumb"})
    term = Terminal([*AGENT, "run", "--job-id", "winch", "--", *rec.command], env, tmp_path)
    try:
        wait_until(rec.ready.exists, what="the job to start")
        term.resize(40, 120)  # the kernel signals the terminal's foreground group: the job's
        wait_until(lambda: "SIGWINCH" in rec.received(), what="SIGWINCH at the job")
        rec.finish()
        assert term.proc.wait(30) == 0, term.output
    finally:
        rec.finish()
        term.close()
