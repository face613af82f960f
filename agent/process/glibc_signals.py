"""The two signals glibc keeps for its threads, 32 (SIGCANCEL) and 33 (SIGSETXID).

glibc's ``sigaction`` refuses them (EINVAL), so Python cannot install a handler, and since
glibc 2.34 it installs its own only when it needs them: 33's at the first thread (2.36), 32's
at the first ``pthread_cancel``, which Python never calls. Until then their action is the
default, and a ``kill -s 32`` ended the agent (exit 160), leaving its job unsupervised.

So the agent ignores them, through the ``rt_sigaction`` system call, when (and only when)
their action is still the default: glibc's own handler, once installed, replaces ours, and
an older glibc that installed its handlers at start keeps them. They are not forwarded (they
mean something to the job's C library, not to the job), and the job gets them back at their
default action before it execs, as it would have had them without us.
"""

from __future__ import annotations

import ctypes
import os
import signal

SIGCANCEL, SIGSETXID = 32, 33
#: rt_sigaction's number where the kernel's struct sigaction is handler, flags, restorer, mask
_SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134}
_SIG_DFL, _SIG_IGN = 0, 1


class _KernelSigaction(ctypes.Structure):
    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("restorer", ctypes.c_void_p),
        ("mask", ctypes.c_uint64),
    ]


class ReservedSignals:
    """Reads and sets the action of glibc's two signals, on Linux x86-64 and arm64 only."""

    def __init__(self) -> None:
        self._nr = _SYS_RT_SIGACTION.get(os.uname().machine)
        self._libc = ctypes.CDLL(None, use_errno=True) if self._nr is not None else None
        # Built now: the child's reset runs between fork and exec, where less is better.
        self._default = _KernelSigaction(_SIG_DFL, 0, None, 0)
        self._ignore = _KernelSigaction(_SIG_IGN, 0, None, 0)

    def _sigaction(self, sig: int, act: _KernelSigaction | None) -> int | None:
        """Set ``act`` (if given); the previous handler's address, or None on failure."""
        if self._libc is None or self._nr is None:
            return None
        old = _KernelSigaction()
        done = self._libc.syscall(
            ctypes.c_long(self._nr),
            ctypes.c_int(sig),
            ctypes.byref(act) if act is not None else None,
            ctypes.byref(old),
            ctypes.c_size_t(8),  # the kernel's sigset_t: 64 signals
        )
        return None if done != 0 else int(old.handler or 0)

    def handler(self, sig: int) -> int | None:
        """0 for the default action, 1 for ignored, else a handler's address."""
        return self._sigaction(sig, None)

    def ignore_while_default(self) -> tuple[int, ...]:
        """Ignore each of the two still at its default action; the ones ignored."""
        if os.uname().sysname != "Linux" or int(signal.SIGRTMIN) != 34:
            return ()  # another C library, other numbers: leave them alone
        ignored = []
        for sig in (SIGCANCEL, SIGSETXID):
            if self.handler(sig) == _SIG_DFL and self._sigaction(sig, self._ignore) is not None:
                ignored.append(sig)
        return tuple(ignored)

    def restore_default(self, sigs: tuple[int, ...]) -> None:
        """Back to the default action (in the job's process, before exec)."""
        for sig in sigs:
            self._sigaction(sig, self._default)


#: what :func:`agent.process.early.install` ignored, for the job to get back at their default
ignored: tuple[int, ...] = ()


def ignore() -> None:
    global ignored
    ignored = ReservedSignals().ignore_while_default()
