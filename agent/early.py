"""Keep a SIGTERM that arrives while ``spot-agent run`` is still starting.

Importing the agent takes a few tenths of a second (boto3, structlog, watchtower). Until
the runner installs its handlers, Python's default action for SIGTERM would end the agent
with 143, which a retry strategy on 75 does not retry; and as PID 1 in a container the
kernel drops the signal altogether, so the job would start and be SIGKILLed at the end of
the grace period with no final checkpoint. So the entry points record a SIGTERM from their
first lines on, and the runner takes an early one as the interruption, its grace period
counted from when it arrived.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from types import FrameType

#: time.time() of the first SIGTERM received before the runner took over, if any
received: float | None = None


def _record(_signum: int, _frame: FrameType | None) -> None:
    global received
    if received is None:
        received = time.time()


def install(argv: Sequence[str]) -> None:
    """Record SIGTERM from now on, for ``spot-agent run`` only (other verbs keep the default)."""
    if list(argv[1:2]) == ["run"]:
        signal.signal(signal.SIGTERM, _record)
