"""Process supervision, in the manner of tini and dumb-init: spawn, signal, reap, escalate.

No S3, no logs, no IMDS here: the runner decides *when*; this module knows *how*.

- The child runs in its own process group, so a signal reaches the whole job (a shell
  script and what it started) and a terminal's Ctrl-C is not delivered twice.
- The agent makes itself a child subreaper (Linux), so orphans of the job re-parent to it
  rather than to init: they are reaped and can be found when the tree must be killed.
  When the agent is PID 1 it is the reaper anyway.
- The child starts as tini starts it: default signal dispositions and an empty mask
  (whatever the agent inherited or set up for itself), the terminal's foreground when the
  agent has one (given in the child, before exec, so an interactive shell never meets
  SIGTTIN), and SIGKILL should the agent die (``kill -9``) without ending it.
- A job stopped by the terminal (Ctrl-Z) stops the agent too, so the shell that started the
  agent gets its prompt back; ``fg`` continues the agent, which continues the job.
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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import psutil

from .signals import TTY_STOPS, UNCATCHABLE, forwarded_signals

__all__ = [
    "Child",
    "SpawnError",
    "become_subreaper",
    "exit_code_of",
    "forwarded_signals",
]

EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
_PR_SET_PDEATHSIG = 1
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


def _libc() -> Any:
    """The C library, for prctl; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux >= 3.4). Harmless and unneeded as PID 1."""
    if os.getpid() == 1:
        return True
    libc = _libc()
    try:
        return libc is not None and bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except AttributeError:
        return False


def _foreground_tty() -> int | None:
    """stdin's descriptor when it is a terminal and the agent's group is its foreground."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _job_control_tty() -> int | None:
    """stdin's descriptor when it is a terminal (a shell's job control may be at work)."""
    try:
        fd = sys.stdin.fileno()
        return fd if os.isatty(fd) else None
    except (OSError, ValueError, AttributeError):
        return None


def _prepare_child(tty_fd: int | None, libc: Any, agent_pid: int) -> Callable[[], None]:
    """What the job's process does between fork and exec (tini's spawn, in Python).

    Only system calls, no locks, no imports: the agent has threads, and only the forking
    one exists in the child. ``libc`` None: no parent-death signal (see ``Child.start``).
    """
    dispositions = [s for s in signal.valid_signals() if s not in UNCATCHABLE]

    def prepare() -> None:
        if libc is not None:
            # Die with the agent: a job must not run on unsupervised after a kill -9 of it.
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != agent_pid:  # the agent died before prctl took hold
                os.kill(os.getpid(), signal.SIGKILL)
        if tty_fd is not None:
            # Our new group is in the background: tcsetpgrp would stop us with SIGTTOU.
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.tcsetpgrp(tty_fd, os.getpgrp())
        for sig in dispositions:  # an ignored SIGINT or SIGHUP the agent inherited, too
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())

    return prepare


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
        #: the terminal of a shell's job control (stdin), if any
        self._tty_fd: int | None = None
        #: the signal that stopped the job, while it is stopped
        self.stopped_by: signal.Signals | None = None
        #: times the agent stopped itself because the terminal stopped the job
        self.suspensions = 0
        self._foreign: set[int] = set()

    def start(self) -> int:
        """Spawn the job. From the main thread, the job also dies with the agent (SIGKILL):
        the kernel sends a parent-death signal when the *thread* that forked it ends."""
        # Our children from before the job are not the job's (a test runner's servers, say):
        # only children that appear later can be the job's re-parented orphans.
        self._foreign = {p.pid for p in psutil.Process().children()}
        self._tty_fd = _job_control_tty()
        try:
            self._popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=None,
                stdout=self.stdout,
                stderr=self.stderr,
                process_group=0,  # set before preexec_fn runs
                preexec_fn=_prepare_child(
                    _foreground_tty(),
                    _libc() if threading.current_thread() is threading.main_thread() else None,
                    os.getpid(),
                ),
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
        return self.pid

    def _hand_terminal(self, to_pgrp: int, *, only_from: int | None = None) -> bool:
        """Make ``to_pgrp`` the terminal's foreground (if ``only_from`` has it, when given).

        Never takes it from the shell that started the agent (after `bg`, it is the shell's).
        """
        fd = self._tty_fd
        if fd is None:
            return False
        try:
            foreground = self._foreground()
            if foreground is None or foreground == to_pgrp:
                return False
            if only_from is not None and foreground != only_from:
                return False
            parent = os.getppid()
            if parent > 0 and foreground == os.getpgid(parent) != os.getpgrp():
                return False
            # Blocked, not ignored, for the call: a background group's tcsetpgrp would
            # otherwise stop the agent with SIGTTOU.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
            try:
                os.tcsetpgrp(fd, to_pgrp)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTTOU})
            return True
        except OSError:
            return False

    def _on_stopped(self, sig: signal.Signals) -> None:
        """The job stopped: on a terminal stop, stop the agent too, then continue them both."""
        self.stopped_by = sig
        if sig not in TTY_STOPS or self._tty_fd is None:
            return  # SIGSTOP, or no job control around: it stays stopped until a SIGCONT
        if os.getpid() != 1:
            # Give the shell that started us its prompt back: it waits for *our* stop.
            self._hand_terminal(os.getpgrp())
            self.suspensions += 1
            os.kill(os.getpid(), signal.SIGSTOP)
            # Continued (`fg` or `bg`): the job comes along.
        elif sig == signal.SIGTSTP or self._foreground() != os.getpgrp():
            # PID 1 has no one to stop for: a SIGTSTP it was sent stays with the job, and a
            # job stopped for reading a terminal the agent cannot give it stays stopped.
            return
        self.resume()

    def _foreground(self) -> int | None:
        try:
            return None if self._tty_fd is None else os.tcgetpgrp(self._tty_fd)
        except OSError:
            return None

    def resume(self) -> None:
        """Continue a stopped job, in the terminal's foreground if the agent holds it."""
        self._hand_terminal(self.pid, only_from=os.getpgrp())
        self.stopped_by = None
        self._signal_group(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.pid != 0 and self.returncode is None

    def send(self, sig: int) -> None:
        """Signal the job's whole process group (falls back to the process itself).

        A SIGCONT (a shell's `fg` continuing the agent, say) gives the job the terminal
        first, if the agent has it, as a shell does before continuing a job.
        """
        if sig == signal.SIGCONT and self.running:
            self.resume()
        else:
            self._signal_group(sig)

    def _signal_group(self, sig: int) -> None:
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
                pid, status = os.waitpid(-1 if self.reaper else self.pid, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                if self.returncode is None:
                    # Someone else reaped it (should not happen); do not wait forever.
                    self._set_exited(0)
                break
            if pid == 0:
                break
            if os.WIFSTOPPED(status):
                if pid == self.pid:
                    self._on_stopped(signal.Signals(os.WSTOPSIG(status)))
                continue
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
        self._hand_terminal(os.getpgrp())
        self._tty_fd = None

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
        self._signal_group(signal.SIGKILL)
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
