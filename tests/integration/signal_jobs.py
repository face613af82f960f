"""Small jobs and launchers for the signal, terminal and start-up tests (real processes)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
import pytest

from agent.process.signals import Sig

PY = sys.executable

#: a job that records, one a line, every signal it receives (standard ones by name, real-time
#: ones by number); it exits 0 once the stop file exists. Its ready file holds its pid. The
#: signals stay blocked and are taken one delivery at a time, so each queued real-time signal
#: is one line (a Python handler would merge those that arrive before it runs).
RECORDER = textwrap.dedent(
    """
    import os, signal, sys, time
    out, stop = sys.argv[1], sys.argv[2]
    uncaught = (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)
    wanted = {sig for sig in signal.valid_signals() if sig not in uncaught}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)

    def name(signum):
        return signal.Signals(signum).name if signum < signal.SIGRTMIN else str(signum)

    with open(out + ".ready.tmp", "w") as f:  # renamed whole: a reader never sees it empty
        f.write(str(os.getpid()))
    os.rename(out + ".ready.tmp", out + ".ready")
    while not os.path.exists(stop):
        info = signal.sigtimedwait(wanted, 0.02)
        if info is not None:
            with open(out, "a") as f:
                f.write(name(info.si_signo) + "\\n")
    """
)


class Recorder:
    """Paths and reading for one RECORDER job."""

    def __init__(self, tmp: Path) -> None:
        self.script = tmp / "recorder.py"
        self.script.write_text(RECORDER)
        self.out = tmp / "received"
        self.ready = tmp / "received.ready"
        self.stop = tmp / "stop"

    @property
    def command(self) -> list[str]:
        return [PY, str(self.script), str(self.out), str(self.stop)]

    def received(self) -> list[str]:
        return self.out.read_text().split() if self.out.exists() else []

    def finish(self) -> None:
        self.stop.write_text("")


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def unshare_pid() -> list[str]:
    """The prefix that runs a command as PID 1 of a new PID namespace, or skip."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed: cannot run the agent as PID 1")
    prefix = [unshare, "--pid", "--fork", "--mount-proc"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"this machine does not allow PID namespaces: {probe.stderr.decode().strip()}")
    return prefix


def agent_process(launcher_pid: int, timeout: float = 20) -> psutil.Process:
    """The agent's process under a launcher (``unshare --fork`` forks it as its child)."""
    found: list[psutil.Process] = []

    def look() -> bool:
        for p in psutil.Process(launcher_pid).children(recursive=True):
            if "agent" in p.cmdline():
                found.append(p)
                return True
        return False

    wait_until(look, timeout, "the agent under its launcher")
    return found[0]


def state(pid: int) -> str:
    """A process's state letter from /proc (T: stopped), or '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def signal_names(sigs: Iterable[int]) -> list[str]:
    return sorted(Sig(s).name for s in sigs)


def recorded_name(sig: int) -> str:
    """How RECORDER writes a signal: its name, or its number for a real-time one."""
    return signal.Signals(sig).name if sig < signal.SIGRTMIN else str(int(sig))


def mask_of(status: str, field: str) -> int:
    """A signal mask (SigBlk, SigIgn, SigCgt) from the text of /proc/PID/status."""
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in {status!r}")


def catches(pid: int, sig: int) -> bool:
    """The process has a handler for ``sig`` (so our code runs in it, for SIGTERM)."""
    try:
        return bool(mask_of(Path(f"/proc/{pid}/status").read_text(), "SigCgt") & (1 << (sig - 1)))
    except OSError:
        return False
