"""Process supervision, in the manner of tini and dumb-init: spawn, signal, reap, escalate.

No S3, no logs, no IMDS here: the runner decides *when*; this module knows *how*.

- The child runs in its own process group, so a signal reaches the whole job (a shell
  script and what it started) and a terminal's Ctrl-C is not delivered twice.
- The agent makes itself a child subreaper (Linux), so orphans of the job re-parent to it
  rather than to init: they are reaped and can be found when the tree must be killed.
  When the agent is PID 1 it is the reaper anyway.
- Exit status follows the shell's convention: the child's code, 128+N when killed by
  signal N, 127 when the command does not exist, 126 when it cannot be executed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import psutil

#: Signals that are passed on to the job unchanged. SIGTERM is not among them: it is an
#: interruption notice, and the runner answers it with the configured stop signal.
FORWARDED_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR2,
)

EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
_PR_SET_CHILD_SUBREAPER = 36


class SpawnError(Exception):
    """The command could not be started; ``exit_code`` is what a shell would return."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_of(status: int) -> int:
    """Shell convention: 128+N for a death by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux >= 3.4). Harmless and unneeded as PID 1."""
    if os.getpid() == 1 or not sys.platform.startswith("linux"):
        return os.getpid() == 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class Child:
    """The job's process, in a process group of its own."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
        reaper: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stdout = stdout
        self.stderr = stderr
        #: reap every child of this process, not only the job (PID 1 or subreaper)
        self.reaper = reaper
        self.pid = 0
        self.started = 0.0
        self.returncode: int | None = None
        self.reaped_orphans = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self._tty_fd: int | None = None
        self._foreign: set[int] = set()

    def start(self) -> int:
        # Our children from before the job are not the job's (a test runner's servers, say):
        # only children that appear later can be the job's re-parented orphans.
        self._foreign = {p.pid for p in psutil.Process().children()}
        try:
            self._popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=None,
                stdout=self.stdout,
                stderr=self.stderr,
                process_group=0,
                close_fds=True,
            )
        except FileNotFoundError:
            raise SpawnError(f"{self.argv[0]}: command not found", EXIT_NOT_FOUND) from None
        except PermissionError:
            raise SpawnError(f"{self.argv[0]}: permission denied", EXIT_NOT_EXECUTABLE) from None
        except OSError as exc:
            raise SpawnError(f"{self.argv[0]}: {exc.strerror}", EXIT_NOT_EXECUTABLE) from None
        self.pid = self._popen.pid
        self.started = time.monotonic()
        self._give_terminal()
        return self.pid

    def _give_terminal(self) -> None:
        """With an interactive terminal, make the job its foreground group (like a shell)."""
        try:
            fd = sys.stdin.fileno()
            if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
                return
            old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                os.tcsetpgrp(fd, self.pid)
                self._tty_fd = fd
            finally:
                signal.signal(signal.SIGTTOU, old)
        except (OSError, ValueError, AttributeError):
            pass

    def _take_terminal_back(self) -> None:
        if self._tty_fd is None:
            return
        old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            os.tcsetpgrp(self._tty_fd, os.getpgrp())
        except OSError:
            pass
        finally:
            signal.signal(signal.SIGTTOU, old)
            self._tty_fd = None

    @property
    def running(self) -> bool:
        return self.pid != 0 and self.returncode is None

    def send(self, sig: int) -> None:
        """Signal the job's whole process group (falls back to the process itself)."""
        if not self.pid:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            if self.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
        except PermissionError:
            pass

    def reap(self) -> int | None:
        """Collect exited children without blocking; the job's exit code once it has one."""
        if not self.pid or (self.returncode is not None and not self.reaper):
            return self.returncode
        while True:
            try:
                pid, status = os.waitpid(-1 if self.reaper else self.pid, os.WNOHANG)
            except ChildProcessError:
                if self.returncode is None:
                    # Someone else reaped it (should not happen); do not wait forever.
                    self._set_exited(0)
                break
            if pid == 0:
                break
            if pid == self.pid:
                self._set_exited(status)
                if not self.reaper:
                    break
            else:
                self.reaped_orphans += 1
        return self.returncode

    def _set_exited(self, status: int) -> None:
        self.returncode = exit_code_of(status)
        if self._popen is not None:
            self._popen.returncode = self.returncode  # so Popen never waits on a reaped pid
        self._take_terminal_back()

    def wait(self, timeout: float | None = None, poll: float = 0.02) -> int | None:
        """The exit code, or None if the job still runs after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.reap() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(poll)
        return self.returncode

    def tree(self) -> list[psutil.Process]:
        """The job and every process descended from it or left in its process group."""
        procs: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            procs[root.pid] = root
            for p in root.children(recursive=True):
                procs[p.pid] = p
        # As subreaper or PID 1, every orphan of the job is re-parented to us, even one that
        # left its process group (setsid, a daemon): our children, minus the ones we had
        # before the job, are the job's.
        if self.reaper:
            with contextlib.suppress(psutil.Error):
                for p in psutil.Process().children():
                    if p.pid in self._foreign:
                        continue
                    procs[p.pid] = p
                    with contextlib.suppress(psutil.Error):
                        procs.update((c.pid, c) for c in p.children(recursive=True))
        # Orphans that stayed in the job's process group, wherever they were re-parented.
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if p.pid not in procs and os.getpgid(p.pid) == self.pid:
                    procs[p.pid] = p
        return list(procs.values())

    def kill_tree(self) -> int:
        """SIGKILL the job's whole tree, including members that left its process group."""
        victims = self.tree()
        for p in victims:
            with contextlib.suppress(psutil.Error):
                p.kill()
        self.send(signal.SIGKILL)
        return len(victims)

    def stop(self, sig: int, timeout: float) -> tuple[int, bool]:
        """Send ``sig``, wait up to ``timeout``, then SIGKILL the tree. (code, was_killed)"""
        self.send(sig)
        code = self.wait(timeout)
        if code is not None:
            return code, False
        self.kill_tree()
        code = self.wait(5.0)
        return (code if code is not None else 128 + signal.SIGKILL), True

    def reap_leftovers(self, grace: float = 2.0) -> int:
        """After the job exited: end what it left running in its group (as a container would)."""
        left = [p for p in self.tree() if p.pid != self.pid]
        if not left:
            return 0
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _gone, alive = psutil.wait_procs(left, timeout=grace)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=grace)
        if self.reaper:
            self.reap()
        return len(left)
