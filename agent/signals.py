"""The one signal table: which signals the agent takes, and how each reaches it.

Light on purpose (standard library, no third-party imports): ``agent/early.py`` uses it
from the first lines of the entry point, before the slow imports.

Every catchable signal is the agent's to handle, so that none can kill it (a killed agent
leaves its job unsupervised). The agent keeps a few for itself (SIGTERM is a notice, the
sync signal asks for a checkpoint, SIGCHLD means "reap"); every other one is forwarded to
the job, as tini and dumb-init do.

Two kinds of arrival:

- most signals run a Python handler (``signal.signal``);
- the signals the agent can raise against itself by accident (a fault in C code, a write
  to a closed pipe, a file over its size limit, ``abort()``, a log line written to the
  terminal from the background under ``stty tostop``) stay blocked in every thread and are
  taken by one thread with ``sigwaitinfo``. Sent by someone else, they are handled like the
  others. Raised by the agent's own fault, the kernel unblocks and delivers them with their
  default action, so a real crash is still a crash (not a handler returning to the
  faulting instruction forever); a write to a broken pipe gets EPIPE, and the signal waits,
  blocked, on the thread that wrote; a terminal write from the background goes through
  (a handled SIGTTOU would make the write fail and retry, forwarding SIGTTOU each time).
"""

from __future__ import annotations

import signal
from collections.abc import Iterable

#: signals no process can catch, block or ignore
UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})

#: taken by a sigwaitinfo thread rather than a handler (see the module docstring)
SELF_RAISED = frozenset(
    {
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGABRT,
        signal.SIGPIPE,
        signal.SIGXFSZ,
        signal.SIGTTIN,
        signal.SIGTTOU,
    }
)

#: the signals the agent keeps, whatever the settings: SIGCHLD means "reap"
ALWAYS_OWNED = frozenset({signal.SIGCHLD})

#: a shell's job-control stops: a job stopped by one of these stops the agent too
TTY_STOPS = frozenset({signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})


def catchable_signals() -> frozenset[signal.Signals]:
    """Every standard signal a handler can be installed for (real-time ones excepted)."""
    return frozenset(
        sig for sig in signal.Signals if sig < signal.SIGRTMIN and sig not in UNCATCHABLE
    )


def forwarded_signals(owned: Iterable[signal.Signals]) -> frozenset[signal.Signals]:
    """Every signal a job can receive, minus the agent's own (``owned``, and SIGCHLD)."""
    return catchable_signals() - frozenset(owned) - ALWAYS_OWNED
