"""A bound on the chunk bytes that transfers hold in memory at once."""

from __future__ import annotations

import threading

#: The default of ``--max-bytes-in-flight``: four chunks of 8 MiB. With the agent's own
#: 70 MiB or so (Python, boto3), an upload of 1 GiB peaked at 114 MiB of RSS; 48 MiB
#: measured 128-131 MiB and 64 MiB 136-139 MiB, none faster on the local server: the
#: upload waits on the server's answers, not on more bytes in flight (bench/).
DEFAULT_MAX_BYTES_IN_FLIGHT = 32 << 20


class ByteBudget:
    """A semaphore counted in bytes.

    ``acquire(n)`` waits until ``n`` more bytes fit under the limit. One request larger
    than the whole limit is let through when nothing else is held, so a chunk bigger than
    the budget slows transfers down to one at a time instead of waiting forever.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"max_bytes_in_flight must be positive, not {limit}")
        self.limit = limit
        self.held = 0
        self.peak = 0  # the most bytes held at once: what the tests check against the limit
        self._cond = threading.Condition()

    def acquire(self, n: int, *, headroom: int = 0) -> None:
        """Wait until ``n`` bytes fit with ``headroom`` more to spare, then hold ``n``.

        ``headroom`` is room kept for bytes the caller is about to hold outside the budget
        (the next chunk it reads while these are sent).
        """
        with self._cond:
            while self.held and self.held + n + headroom > self.limit:
                self._cond.wait()
            self.held += n
            self.peak = max(self.peak, self.held)

    def try_acquire(self, n: int) -> bool:
        """Hold ``n`` bytes if they fit now (or nothing is held); never waits."""
        with self._cond:
            if self.held and self.held + n > self.limit:
                return False
            self.held += n
            self.peak = max(self.peak, self.held)
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()
