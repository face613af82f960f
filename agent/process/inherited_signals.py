"""The signal state the agent was started with, for the job to start with it too, as tini
keeps it for its child.

A job started under ``nohup`` finds SIGHUP ignored, and one started by a shell's ``&``
SIGINT; a parent may block signals too (tini's sigconf test ignores and blocks a few). The
agent itself catches every signal (it forwards them, and a SIGTERM is a notice), so it
notes that state before it installs a handler or changes its mask
(:func:`agent.process.early.install`), and the job gets it back between fork and exec
(``agent/process/spawn.py``). Before the job starts, a signal the parent ignored does not stop the
agent either (``nohup spot-agent run ...`` survives a hang-up during the restore).

Two cannot be told apart: Python ignores SIGPIPE and SIGXFSZ at start-up, whatever it
inherited, so the job gets those two at their default action, as ``subprocess`` gives them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable

from .signals import Sig, catchable_signals, sigs

#: ignored by Python itself at start-up: their inherited action is unknown
_PYTHON_IGNORES = sigs(signal.SIGPIPE, signal.SIGXFSZ)

#: the signals the agent's parent left ignored
ignored: frozenset[Sig] = frozenset()
#: the signals the agent's parent left blocked
blocked: frozenset[Sig] = frozenset()


def note_ignored() -> None:
    """Call before installing any handler."""
    global ignored
    ignored = frozenset(
        sig
        for sig in catchable_signals() - _PYTHON_IGNORES
        if signal.getsignal(sig) == signal.SIG_IGN
    )


def note_blocked(mask: Iterable[int]) -> None:
    """``mask``: the mask the agent started with (what ``pthread_sigmask`` returned)."""
    global blocked
    blocked = sigs(*mask) & catchable_signals()
