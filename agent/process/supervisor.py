"""Process supervision, in the manner of tini and dumb-init: spawn, signal, reap, escalate.

No S3, no logs, no IMDS here: the runner decides *when*; this module knows *how*.

- The child runs in its own process group, so a signal reaches the whole job (a shell
  script and what it started) and a terminal's Ctrl-C is not delivered twice.
- The agent makes itself a child subreaper (Linux), so orphans of the job re-parent to it
  rather than to init: they are reaped and can be found when the tree must be killed.
  When the agent is PID 1 it is the reaper anyway.
- The child starts as tini starts it (``agent/process/spawn.py``): the signal dispositions and
  mask the agent inherited, the terminal given before exec, SIGKILL should the agent die.
- A job stopped by the terminal (Ctrl-Z) stops the agent too, so the shell that started the
  agent gets its prompt back; ``fg`` continues the agent, which continues the job.
- Exit status follows the shell's convention: the child's code, 128+N when killed by
  signal N, 127 when the command does not exist, 126 when it cannot be executed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from ..exits import killed_by
from .signals import TTY_STOPS, Sig, forwarded_signals
from .spawn import PR_SET_CHILD_SUBREAPER, libc, spawn
from .terminal import Terminal
from .tree import end_all, job_tree, kill_all, own_children

if TYPE_CHECKING:
    import psutil

__all__ = [
    "Child",
    "become_subreaper",
    "exit_code_of",
    "forwarded_signals",
]


def exit_code_of(status: int) -> int:
    """Shell convention: 128+N for a death by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return killed_by(-code) if code < 0 else code


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux >= 3.4). Harmless and unneeded as PID 1."""
    if os.getpid() == 1:
        return True
    c = libc()
    try:
        return c is not None and bool(c.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except AttributeError:
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
        unblocked: Sequence[int] = (),
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stdout = stdout
        self.stderr = stderr
        #: reap every child of this process, not only the job (PID 1 or subreaper)
        self.reaper = reaper
        #: signals the job gets unblocked even if the agent inherited them blocked
        self.unblocked = tuple(unblocked)
        self.pid = 0
        self.started = 0.0
        self.returncode: int | None = None
        self.reaped_orphans = 0
        self._popen: subprocess.Popen[bytes] | None = None
        #: the terminal of a shell's job control (stdin), if any
        self._tty: Terminal | None = None
        #: the signal that stopped the job, while it is stopped
        self.stopped_by: Sig | None = None
        #: times the agent stopped itself because the terminal stopped the job
        self.suspensions = 0
        self._foreign: set[int] = set()

    def start(self, directory: int | None = None) -> int:
        """Spawn the job, in ``directory`` (a descriptor) if given. From the main thread,
        the job also dies with the agent (SIGKILL): the kernel sends a parent-death signal
        when the *thread* that forked it ends."""
        # Our children from before the job are not the job's (a test runner's servers, say):
        # only children that appear later can be the job's re-parented orphans.
        self._foreign = own_children()
        self._tty = Terminal.of_stdin()
        tty = self._tty.fd if self._tty is not None and self._tty.ours() else None
        self._popen = spawn(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=self.stdout,
            stderr=self.stderr,
            tty=tty,
            directory=directory,
            unblocked=self.unblocked,
        )
        self.pid = self._popen.pid
        self.started = time.monotonic()
        return self.pid

    def _on_stopped(self, sig: Sig) -> None:
        """The job stopped: on a terminal stop, stop the agent too, then continue them both."""
        self.stopped_by = sig
        if sig not in TTY_STOPS or self._tty is None:
            return  # SIGSTOP, or no job control around: it stays stopped until a SIGCONT
        if os.getpid() != 1:
            # Give the shell that started us its prompt back: it waits for *our* stop.
            self._tty.hand(os.getpgrp())
            self.suspensions += 1
            os.kill(os.getpid(), signal.SIGSTOP)
            # Continued (`fg` or `bg`): the job comes along.
        elif sig == Sig(signal.SIGTSTP) or not self._tty.ours():
            # PID 1 has no one to stop for: a SIGTSTP it was sent stays with the job, and a
            # job stopped for reading a terminal the agent cannot give it stays stopped.
            return
        self.resume()

    def resume(self) -> None:
        """Continue a stopped job, in the terminal's foreground if the agent holds it."""
        if self._tty is not None:
            self._tty.hand(self.pid, only_from=os.getpgrp())
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

    def send_main(self, sig: int) -> None:
        """Signal the job's own process only (its command), as ``docker stop`` does PID 1."""
        if self.running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

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
                    self._on_stopped(Sig(os.WSTOPSIG(status)))
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
        if self._tty is not None:
            self._tty.hand(os.getpgrp())
            self._tty = None

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
        return job_tree(self.pid, reaper=self.reaper, foreign=self._foreign)

    def kill_tree(self) -> int:
        """SIGKILL the job's whole tree, including members that left its process group."""
        victims = self.tree()
        kill_all(victims)
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
        return (code if code is not None else killed_by(signal.SIGKILL)), True

    def reap_leftovers(self, grace: float = 2.0) -> int:
        """After the job exited: end what it left running in its group (as a container would)."""
        left = [p for p in self.tree() if p.pid != self.pid]
        if not left:
            return 0
        end_all(left, grace)
        if self.reaper:
            self.reap()
        return len(left)
