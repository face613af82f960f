"""The one signal table: which signals the agent takes, and how each reaches it.

Light on purpose (standard library, no third-party imports): ``agent/process/early.py`` uses it
from the first lines of the entry point, before the slow imports.

Every catchable signal is the agent's to handle, so that none can kill it (a killed agent
leaves its job unsupervised). The agent keeps a few for itself (SIGTERM is a notice, the
sync signal asks for a checkpoint, SIGCHLD means "reap"); every other one is forwarded to
the job, as tini and dumb-init do.

Signals are plain numbers of type :class:`Sig` (an ``int``), not ``signal.Signals``: that
enum has no members for most real-time signals (SIGRTMIN..SIGRTMAX, 34-64 under glibc,
which keeps 32 and 33 for its threads), and those are forwarded like the rest. A ``Sig``
names itself as ``kill -l`` does: ``SIGUSR1``, ``SIGRTMIN+3``, ``SIGRTMAX-1``.

Two kinds of arrival:

- most standard signals run a Python handler (``signal.signal``);
- the others stay blocked in every thread and are taken by one thread with
  ``sigwaitinfo``, which then calls the Python handler installed for them (``WAITED``):
  - real-time signals (``REALTIME``): the kernel queues one per ``kill()``, and
    ``sigwaitinfo`` dequeues them one at a time, so each delivery is forwarded (a Python
    handler only sets a flag in C, and deliveries that come before it runs are merged
    into one call);
  - the signals the agent can raise against itself by accident (``SELF_RAISED``: a fault
    in C code, a write to a closed pipe, a file over its size limit, ``abort()``, a log
    line written to the terminal from the background under ``stty tostop``). Sent by
    someone else, they are handled like the others. Raised by the agent's own fault, the
    kernel unblocks and delivers them with their default action, so a real crash is still
    a crash (not a handler returning to the faulting instruction forever); a write to a
    broken pipe gets EPIPE, and the signal waits, blocked, on the thread that wrote; a
    terminal write from the background goes through (a handled SIGTTOU would make the
    write fail and retry, forwarding SIGTTOU each time).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable

#: the real-time range as this C library leaves it to programs (glibc: 34..64)
RTMIN = int(getattr(signal, "SIGRTMIN", 0))
RTMAX = int(getattr(signal, "SIGRTMAX", -1))


class Sig(int):
    """A signal number that names itself as ``kill -l`` does (``SIGRTMIN+3`` for 37)."""

    __slots__ = ()

    @property
    def name(self) -> str:
        n = int(self)
        if RTMIN <= n <= RTMAX:
            if n == RTMIN:
                return "SIGRTMIN"
            if n == RTMAX:
                return "SIGRTMAX"
            # bash's split: the lower half counts up from RTMIN, the upper down from RTMAX
            if n - RTMIN <= (RTMAX - RTMIN) // 2:
                return f"SIGRTMIN+{n - RTMIN}"
            return f"SIGRTMAX-{RTMAX - n}"
        try:
            return signal.Signals(n).name
        except ValueError:
            return str(n)

    def __repr__(self) -> str:
        return f"<{self.name}: {int(self)}>"

    @classmethod
    def parse(cls, raw: str) -> Sig:
        """A signal from ``SIGUSR1``, ``usr1``, ``10``, ``SIGRTMIN+2``, ``RTMAX-1``, ``36``;
        raises ValueError naming what is wrong."""
        name = raw.strip().upper()
        if name.isdigit():
            if int(name) not in signal.valid_signals():
                raise ValueError(f"no signal number {name} (valid: 1-31, {RTMIN}-{RTMAX})")
            return cls(int(name))
        rt = _REALTIME_NAME.match(name)
        if rt is not None:
            base = RTMIN if rt.group(1) == "MIN" else RTMAX
            offset = int(rt.group(3) or 0) * (-1 if rt.group(2) == "-" else 1)
            if not RTMIN <= base + offset <= RTMAX:
                raise ValueError(
                    f"{raw.strip()!r} is outside the real-time signals "
                    f"SIGRTMIN..SIGRTMAX ({RTMIN}-{RTMAX})"
                )
            return cls(base + offset)
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return cls(signal.Signals[name])
        except KeyError:
            raise ValueError(
                f"unknown signal {raw!r} (try SIGTERM, SIGINT, SIGUSR2, SIGRTMIN+1 or a number)"
            ) from None


_REALTIME_NAME = re.compile(r"(?:SIG)?RT(MIN|MAX)(?:([+-])(\d+))?\Z")


def sigs(*numbers: int) -> frozenset[Sig]:
    return frozenset(Sig(n) for n in numbers)


#: signals no process can catch, block or ignore
UNCATCHABLE = sigs(signal.SIGKILL, signal.SIGSTOP)

#: taken by a sigwaitinfo thread rather than a handler: the agent may raise them itself
SELF_RAISED = sigs(
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
)

#: every real-time signal a program may use (glibc's own two, 32 and 33, are not ours)
REALTIME = sigs(*range(RTMIN, RTMAX + 1))

#: blocked in every thread of the agent and taken one delivery at a time by sigwaitinfo
WAITED = SELF_RAISED | REALTIME

#: "checkpoint now" unless --sync-signal says otherwise
DEFAULT_SYNC_SIGNAL = Sig(signal.SIGUSR1)

#: the signals the agent keeps, whatever the settings: SIGCHLD means "reap"
ALWAYS_OWNED = sigs(signal.SIGCHLD)

#: a shell's job-control stops: a job stopped by one of these stops the agent too
TTY_STOPS = sigs(signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def catchable_signals() -> frozenset[Sig]:
    """Every signal a handler can be installed for: the standard ones and the real-time ones."""
    return sigs(*signal.valid_signals()) - UNCATCHABLE


def forwarded_signals(owned: Iterable[int]) -> frozenset[Sig]:
    """Every signal a job can receive, minus the agent's own (``owned``, and SIGCHLD)."""
    return catchable_signals() - sigs(*owned) - ALWAYS_OWNED
