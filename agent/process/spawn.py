"""How the job's process is started: prepared between fork and exec as tini prepares its
child, and a failure to start it given a shell's exit status (127 not found, 126 cannot be
executed). Prepared:

- the signal dispositions and mask the agent inherited, as tini gives them (an ignored
  SIGHUP from ``nohup``, an ignored SIGINT from a shell's ``&``, what a parent blocked: see
  ``agent/process/inherited_signals.py``), not what the agent set up for itself (its handlers,
  glibc's 32 and 33, see ``agent/process/glibc_signals.py``); the stop signal is never blocked;
- the terminal's foreground, when the agent has it: given *in the child*, before exec, so
  a job-control shell never finds itself in the background and stops on SIGTTIN;
- SIGKILL should the agent die (``kill -9``) without ending it;
- the working directory the agent was started in, by descriptor (the agent has left it
  for ``/`` before the fork, so the job never sees the agent in it);
- the open-file limit the agent was started with (the agent raises its own soft limit to
  the hard one for restores; the job gets what it would have had without us).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

from . import glibc_signals, inherited_signals
from .signals import catchable_signals, sigs

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: the soft open-file limit inherited by the agent, before it raises its own
INHERITED_NOFILE_SOFT = resource.getrlimit(resource.RLIMIT_NOFILE)[0]

EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class SpawnError(Exception):
    """The command could not be started; ``exit_code`` is what a shell would return."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def libc() -> Any:
    """The C library, for prctl; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def prepare_child(
    foreground_tty: int | None,
    directory: int | None = None,
    unblocked: Iterable[int] = (),
) -> Callable[[], None]:
    """The ``preexec_fn`` for the job; call it in the thread that spawns. ``unblocked``:
    signals the job must be able to receive even if the agent's parent blocked them.

    The parent-death signal follows the *thread* that forked, not the process: a job
    spawned from a thread that ends would be killed with it. So only a spawn from the main
    thread, which lives as long as the agent, asks for one.
    """
    c = libc() if threading.current_thread() is threading.main_thread() else None
    agent_pid = os.getpid()
    # real-time ones too; each back to what the agent inherited
    dispositions = [
        (sig, signal.SIG_IGN if sig in inherited_signals.ignored else signal.SIG_DFL)
        for sig in sorted(catchable_signals())
    ]
    mask = sorted(inherited_signals.blocked - sigs(*unblocked))
    nofile = INHERITED_NOFILE_SOFT
    reserved = glibc_signals.ignored
    glibc = glibc_signals.ReservedSignals() if reserved else None

    # Only system calls from here on, no locks, no imports: the agent has threads, and only
    # the forking one exists in the child.
    def prepare() -> None:
        if directory is not None:
            os.fchdir(directory)  # an error here is the spawn's error, as chdir's would be
        if c is not None:
            c.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != agent_pid:  # the agent died before prctl took hold
                os.kill(os.getpid(), signal.SIGKILL)
        if foreground_tty is not None:
            # Our new group is in the background: tcsetpgrp would stop us with SIGTTOU.
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.tcsetpgrp(foreground_tty, os.getpgrp())
        for sig, action in dispositions:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, action)
        if glibc is not None:
            glibc.restore_default(reserved)  # ignored by the agent (an ignore survives exec)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        with contextlib.suppress(ValueError, OSError):
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    return prepare


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    stdout: IO[Any] | int | None,
    stderr: IO[Any] | int | None,
    tty: int | None,
    directory: int | None,
    unblocked: Sequence[int],
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a process group of its own, prepared by :func:`prepare_child`
    (given the terminal ``tty`` if not None, in ``directory`` if given). Raises
    :class:`SpawnError`."""
    try:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=None,
            stdout=stdout,
            stderr=stderr,
            process_group=0,  # set before preexec_fn runs
            preexec_fn=prepare_child(tty, directory, unblocked),
            close_fds=True,
        )
    except FileNotFoundError:
        raise SpawnError(f"{argv[0]}: command not found", EXIT_NOT_FOUND) from None
    except PermissionError:
        raise SpawnError(f"{argv[0]}: permission denied", EXIT_NOT_EXECUTABLE) from None
    except OSError as exc:
        raise SpawnError(f"{argv[0]}: {exc.strerror}", EXIT_NOT_EXECUTABLE) from None
    except subprocess.SubprocessError:  # only fchdir can fail in prepare_child
        raise SpawnError(
            f"{argv[0]}: cannot enter the working directory it was started in",
            EXIT_NOT_EXECUTABLE,
        ) from None
