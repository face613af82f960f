"""What a signal or a notice means to the run, decided on the loop thread, and what they
have done to it so far (:class:`Arrived`, written here only)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import logs
from ..checkpoint_view import Checkpoints
from ..config import Settings
from ..notices import INTERRUPTION, REBALANCE, Notice, NoticeBoard, sigterm_notice
from ..process import inherited_signals
from ..process.signals import Sig
from ..timeline.record import AttemptRecord
from . import meanings as signals
from .jobenv import JobFiles
from .meanings import Meaning
from .parts import Job
from .report import rounded
from .scheduler import Interruption
from .syncs import Syncs

log = logs.get_logger()

#: a later interruption moves the deadline only when it is sooner by more than this: the
#: same notice polled again converts to (nearly) the same deadline, give or take clock jitter
SOONER_BY = 0.5


@dataclass
class Arrived:
    """What signals and notices have done to the run: the loop and the endings read it."""

    interruption: Interruption | None = None  # the one acted on (its deadline may move)
    stopped_by: Sig | None = None  # Ctrl-C etc. before the job started
    held: list[Sig] = field(default_factory=list)  # the job's signals before it existed
    board: NoticeBoard = field(default_factory=NoticeBoard)  # rebalance, scheduled: once each

    def seconds_left(self) -> float | None:
        """Until the interruption's deadline (None when there is none), monotonic."""
        if self.interruption is None:
            return None
        return self.interruption.seconds_left(time.monotonic())

    def left(self) -> float:
        """Until the deadline, never negative; 0 without one."""
        return max(self.seconds_left() or 0.0, 0.0)


class RunLoop(Protocol):
    """What an arrival reads of the run loop (``loop.RunLoop``); it writes only
    :attr:`arrived`, asks for syncs and tells the record and the checkpoints."""

    @property
    def arrived(self) -> Arrived: ...
    @property
    def s(self) -> Settings: ...
    @property
    def table(self) -> dict[Sig, Meaning]: ...
    @property
    def files(self) -> JobFiles: ...
    @property
    def syncs(self) -> Syncs: ...
    @property
    def job(self) -> Job | None: ...
    @property
    def record(self) -> AttemptRecord: ...  # this attempt's timeline record
    @property
    def ckpt(self) -> Checkpoints | None: ...  # told of each declaration (a sync request)
    def announce(self, notice: Notice) -> None: ...  # a group's: tell the other nodes


def on_signal(loop: RunLoop, sig: Sig, at: float, forwarded: bool) -> None:
    """What a signal to the agent does, on the loop thread (forwarding is done by then)."""
    meaning = loop.table.get(sig)
    if meaning is Meaning.NOTICE:
        on_notice(loop, sigterm_notice(loop.s.grace_period, at), at)
    elif meaning is Meaning.SYNC:
        if loop.job is None:
            log.info("sync.ignored", by=sig.name, why="the job has not started")
        else:
            log.info("sync.requested", by=sig.name)
            if loop.ckpt is not None:
                loop.ckpt.declared(at)  # binding from now on: see SavePointCheckpoints
            loop.syncs.request("requested")
    elif meaning is Meaning.FORWARD:
        _forward(loop, sig, forwarded)


def _forward(loop: RunLoop, sig: Sig, forwarded: bool) -> None:
    """The job's signal: the handler passed it on at once unless there was no job then."""
    job = loop.job
    if forwarded:
        log.info("signal.forwarded", signal=sig.name)
    elif job is None and sig in signals.STOP_BEFORE_START - inherited_signals.ignored:
        # (one the agent's parent ignored, nohup's SIGHUP, is held for the job instead)
        log.warning("agent.stopping", signal=sig.name, why="received before the job started")
        loop.arrived.stopped_by = loop.arrived.stopped_by or sig
    elif job is None:
        loop.arrived.held.append(sig)  # sent once the job exists: nothing is lost
        log.info("signal.held", signal=sig.name, why="the job has not started yet")
    elif job.running:
        job.send(sig)  # it came while the job was being started
        log.info("signal.forwarded", signal=sig.name, late=True)
    else:
        log.info("signal.not_forwarded", signal=sig.name, why="the job has ended")


def on_notice(loop: RunLoop, notice: Notice, at: float) -> None:
    """The first interruption is acted on; a later one only if its deadline is sooner.
    Rebalance and scheduled-event notices ask for a sync, once each."""
    fields: dict[str, Any] = {"source": notice.source, "action": notice.action}
    if notice.kind == INTERRUPTION:
        new = Interruption.arrived(notice, at, loop.s.grace_period)
        fields.update(
            deadline=notice.deadline.isoformat() if notice.deadline else None,
            seconds_left=rounded(new.seconds_left(time.monotonic())),
        )
        arrived = loop.arrived
        if arrived.interruption is None:
            log.warning("notice.interruption", **fields)
            loop.announce(notice)  # a group's other nodes stop too
        elif new.deadline < arrived.interruption.deadline - SOONER_BY:
            log.warning("notice.deadline_moved", **fields, why="a later notice is more urgent")
            loop.files.write_notice(notice)
        else:
            log.debug("notice.repeat", **fields)
            return
        arrived.interruption = new
        loop.record.interrupted(notice)
        return
    if not loop.arrived.board.accept(notice):
        log.debug("notice.repeat", **fields)
        return
    fields["deadline"] = notice.deadline.isoformat() if notice.deadline else None
    if notice.kind == REBALANCE:
        log.warning("notice.rebalance", **fields, action_taken="checkpoint now, keep running")
        loop.syncs.request("rebalance")
    else:
        log.warning("notice.scheduled", **fields, detail=notice.detail)
        loop.syncs.request("scheduled-event")
