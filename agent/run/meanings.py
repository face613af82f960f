"""Which signal to the agent means what (tini's table, plus our meanings), and the handler
that stamps each one with the moment it arrived."""

from __future__ import annotations

import enum
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..process import early
from ..process.signals import Sig, forwarded_signals, sigs
from .events import SignalReceived


class Meaning(enum.Enum):
    NOTICE = "notice"  # an interruption: the platform's SIGTERM
    SYNC = "sync"  # the job asks for a checkpoint now
    REAP = "reap"  # a child changed state
    FORWARD = "forward"  # the job's, passed on at once


#: before the job exists, these stop the agent (a terminal's Ctrl-C, hang-up or quit)
STOP_BEFORE_START = sigs(signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def signal_table(sync_signal: int) -> dict[Sig, Meaning]:
    """Every catchable signal, real-time ones included, with what it means to the agent."""
    table = {sig: Meaning.FORWARD for sig in forwarded_signals({signal.SIGTERM, sync_signal})}
    table[Sig(signal.SIGTERM)] = Meaning.NOTICE
    table[Sig(signal.SIGCHLD)] = Meaning.REAP
    table[Sig(sync_signal)] = Meaning.SYNC  # SIGUSR1 by default; forwarded when another is chosen
    return table


Handler = Callable[[Sig, float], None]


def install(table: dict[Sig, Meaning], on_signal: Handler) -> Callable[[], None]:
    """Route every signal of ``table`` to ``on_signal(sig, monotonic arrival time)``;
    returns what puts the previous handlers back."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        on_signal(Sig(signum), time.monotonic())

    old: dict[Sig, Any] = {}
    for sig, meaning in table.items():
        old[sig] = signal.signal(sig, handler)
        if meaning is Meaning.REAP:
            signal.siginterrupt(sig, False)

    def restore() -> None:
        for sig, previous in old.items():
            signal.signal(sig, previous)

    return restore


def early_signals() -> list[SignalReceived]:
    """Signals :mod:`agent.process.early` kept while the agent was importing, in arrival order,
    each with its monotonic arrival time."""
    return [SignalReceived(sig, at) for sig, at in early.take()]
