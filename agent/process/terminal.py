"""The terminal a shell's job control runs on, as the supervisor sees it (stdin).

A shell gives the terminal to its foreground job and waits for that job to exit or stop.
The agent is such a job, and its own job is in a process group of its own: so the agent
passes the terminal on to its job, takes it back when the job stops or exits, and never
takes it from the shell that started it.
"""

from __future__ import annotations

import os
import signal
import sys


class Terminal:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def of_stdin(cls) -> Terminal | None:
        """stdin, when it is a terminal."""
        try:
            fd = sys.stdin.fileno()
            return cls(fd) if os.isatty(fd) else None
        except (OSError, ValueError, AttributeError):
            return None

    def foreground(self) -> int | None:
        """The terminal's foreground process group, or None if it is not ours to ask."""
        try:
            return os.tcgetpgrp(self.fd)
        except OSError:
            return None

    def ours(self) -> bool:
        """The agent's process group is the foreground: it may give the terminal away."""
        return self.foreground() == os.getpgrp()

    def hand(self, to_pgrp: int, *, only_from: int | None = None) -> bool:
        """Make ``to_pgrp`` the foreground (only if ``only_from`` has it, when given).

        Never takes the terminal from the shell that started the agent (after `bg`).
        """
        foreground = self.foreground()
        if foreground is None or foreground == to_pgrp:
            return False
        if only_from is not None and foreground != only_from:
            return False
        try:
            parent = os.getppid()
            if parent > 0 and foreground == os.getpgid(parent) != os.getpgrp():
                return False
            # Blocked for the call (it is, always, under ``agent.process.early``): a background
            # group's tcsetpgrp would otherwise stop the agent with SIGTTOU.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
            try:
                os.tcsetpgrp(self.fd, to_pgrp)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            return True
        except OSError:
            return False
