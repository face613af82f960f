"""The first store calls of an attempt, against a store that stumbles.

At start the agent checks the store and claims an attempt number. A store met at a bad
moment answers 503 SlowDown, resets connections, cuts bodies short or says nothing at
all. With the SDK's own retries alone (8 attempts, 60 s per read), a throttled store
failed the job for good in seconds (exit 69, which a retry strategy rightly does not
retry), and a silent endpoint gave 8 minutes without a line of log.

So the calls made here use their own client, sized for the time start-up has: two SDK
attempts per call, short connect and read timeouts, so that a silent endpoint is reported
within seconds. A failure that may pass (``StoreError.transient``) is made again after a
back-off (1 s, doubling to 30 s), with one log line per wait, until ``--startup-timeout``
runs out; then :class:`StoreNotReady`, which the run ends with
:data:`agent.exits.STORE_NOT_READY`, a code the Batch retry strategy retries. A failure
that will not pass (no bucket, access denied, bad credentials) is raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from checkpoint.errors import StoreError

from .. import logs

log = logs.get_logger()
T = TypeVar("T")


@dataclass(frozen=True)
class StartupPolicy:
    """How long, and how, start-up retries the store (see the module's docstring)."""

    timeout: float  # --startup-timeout: 0 is one try
    first_wait: float = 1.0
    max_wait: float = 30.0
    #: per call: the SDK's attempts (its own short back-off between them), and the timeouts
    #: of each request: long enough for a HEAD or a small PUT on a slow path, short enough
    #: that a silent endpoint is reported within 10 s of start (2 x 3 s, plus the SDK's
    #: back-off of at most 1 s)
    sdk_attempts: int = 2
    connect_timeout: float = 2.0
    read_timeout: float = 3.0

    def client_options(self) -> dict[str, Any]:
        """What the start-up store's client is opened with (an S3 store's; a local store
        ignores them)."""
        return {
            "max_attempts": self.sdk_attempts,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }


class StoreNotReady(StoreError):
    """The store failed transiently for all of ``--startup-timeout``."""

    def __init__(self, last: StoreError, tries: int, waited: float) -> None:
        super().__init__(
            f"{last} (still failing after {tries} tries in {waited:.0f}s, --startup-timeout)",
            transient=True,
        )
        self.tries = tries


def retry_transient(
    step: Callable[[], T],
    policy: StartupPolicy,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``step()``, made again after each transient store failure until the policy's time
    runs out (:class:`StoreNotReady`); any other failure is raised as it is."""
    started = clock()
    wait = policy.first_wait
    tries = 0
    while True:
        tries += 1
        try:
            return step()
        except StoreError as exc:
            if not exc.transient:
                raise
            elapsed = clock() - started
            left = policy.timeout - elapsed
            if left <= 0:
                raise StoreNotReady(exc, tries, elapsed) from exc
            pause = min(wait, left)
            log.warning(
                "store.retry",
                error=str(exc),
                tries=tries,
                wait_seconds=round(pause, 3),
                seconds_left=round(left, 3),
                why="at start, a failure that may pass: tried again until --startup-timeout",
            )
            sleep(pause)
            wait = min(2 * wait, policy.max_wait)
