"""The run loop's worker threads: every slow step (the claim, the source probe, the restore,
a sync, a continuation) runs in one and reports back as an event; start-up's three steps and
what they gave, typed; and the workers a deadline leaves running, which the process
abandons instead of waiting for."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from checkpoint.engine.restore.restore import RestoreResult

from .. import logs
from ..config import ConfigError
from ..notices import NoticeSource
from .events import (
    Claimed,
    Event,
    Restored,
    SourcesReady,
    StartupDone,
    StartupFailed,
)

log = logs.get_logger()


class Workers:
    """Threads the loop starts and never waits on from its own thread."""

    def __init__(self, post: Callable[[Event], None]) -> None:
        self._post = post
        self._threads: list[threading.Thread] = []

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def step(self, step: str, work: Callable[[], Any], done: Callable[[Any], StartupDone]) -> None:
        """Run one start-up ``step``; it posts ``done(what work returned)``, or
        :class:`StartupFailed` with what it raised."""
        post = self._post

        def run() -> None:
            try:
                value = work()
            except BaseException as exc:
                post(StartupFailed(step, exc))
                return
            post(done(value))

        self.spawn(run, step)

    @property
    def abandoned(self) -> bool:
        """A worker still runs (a restore or an upload cut short by the deadline): the
        process must exit without waiting for it."""
        return any(t.is_alive() for t in self._threads)


@dataclass
class StartupSteps:
    """What start-up's steps gave, as their events came in on the loop thread."""

    claimed: Claimed | None = None
    sources: tuple[NoticeSource, ...] | None = None
    restored: RestoreResult | None = None
    failed: StartupFailed | None = None

    def take(self, ev: Claimed | SourcesReady | Restored | StartupFailed) -> None:
        match ev:
            case Claimed():
                self.claimed = ev
            case SourcesReady(sources):
                self.sources = sources
            case Restored(result):
                self.restored = result
            case StartupFailed("sources", error) if not isinstance(error, ConfigError):
                # no notice source works here: the run goes on, told of SIGTERM only
                log.error("notice_source.failed", error=repr(error), notices="SIGTERM only")
                self.sources = ()
            case StartupFailed():
                self.failed = ev

    @property
    def ready(self) -> bool:
        """The sources are chosen and the dir restored: the job may start."""
        return self.sources is not None and self.restored is not None
