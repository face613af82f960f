"""Take every signal from the first lines of ``spot-agent run``, and keep it for the run loop.

Importing the agent takes a few tenths of a second (boto3, botocore, structlog). Until
the run loop installs its handlers, a signal's default action would end the agent: 143 for
a SIGTERM (which a retry strategy on 75 does not retry), a ``KeyboardInterrupt`` for a
SIGINT, a plain death for SIGHUP, SIGUSR1, SIGALRM... And as PID 1 in a container the
kernel drops a signal the agent has no handler for, so the job would start and be SIGKILLed
at the end of the grace period with no final checkpoint.

So the entry points call :func:`install` first: it unblocks whatever mask the agent
inherited, and records each signal with the moment it arrived (every catchable one, the
real-time ones included, each queued delivery of those once). The run loop then calls
:func:`take` and replays them in order (SIGTERM as a notice counted from its arrival time,
SIGINT before the job starts as a stop, the rest forwarded once the job exists).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType

from . import glibc_signals, inherited_signals
from .signals import ALWAYS_OWNED, WAITED, Sig, catchable_signals

_received: list[tuple[Sig, float]] = []
_installed = False


def _record(signum: int, _frame: FrameType | None) -> None:
    # No lock: a handler may interrupt take() in the same thread; append and pop are atomic.
    _received.append((Sig(signum), time.monotonic()))


def take() -> list[tuple[Sig, float]]:
    """The signals received so far, oldest first, with their ``time.monotonic()``; clears them."""
    taken: list[tuple[Sig, float]] = []
    while _received:
        taken.append(_received.pop(0))  # pop is atomic: a signal arriving now is not lost
    return taken


def _take_waited() -> None:
    """Take the blocked signals (WAITED) for whatever Python handler is installed now: one
    call per delivery, so each queued real-time signal is counted (and forwarded) once."""
    waited = set(WAITED)
    while True:
        info = signal.sigwaitinfo(waited)
        handler = signal.getsignal(info.si_signo)
        if callable(handler):
            handler(info.si_signo, None)


def install(argv: Sequence[str]) -> None:
    """From now on no signal kills ``spot-agent run``; other verbs keep the defaults."""
    global _installed
    if list(argv[1:2]) != ["run"] or _installed:
        return
    _installed = True
    inherited_signals.note_ignored()  # for the job, before our handlers replace them
    for sig in catchable_signals() - ALWAYS_OWNED:  # SIGCHLD's default (ignore) is harmless
        signal.signal(sig, _record)
    glibc_signals.ignore()  # 32 and 33: no handler can be installed, and they would kill us
    # An inherited mask (tini's sigconf test starts it with SIGTERM blocked) would keep a
    # notice from ever arriving. Block only what the sigwait thread takes; the threads
    # started later inherit this mask, so that thread is the only one to receive them.
    # The job gets the inherited mask back (agent/process/spawn.py).
    inherited_signals.note_blocked(signal.pthread_sigmask(signal.SIG_SETMASK, WAITED))
    threading.Thread(target=_take_waited, name="signals", daemon=True).start()
