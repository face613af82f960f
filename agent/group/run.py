"""What the run loop gets for a group: its checkpoints, its notice source, the relay of
its own notices to the others, and the wait for the group's final record."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from checkpoint.engine.format.layout import ATTEMPTS
from checkpoint.engine.group import Group, RankStore
from checkpoint.engine.store.base import Store
from checkpoint.errors import CheckpointError

from .. import logs
from ..checkpoint_view import Checkpoints
from ..config import GroupSettings
from ..notices import Notice, NoticeSource
from .checkpoints import GroupCheckpoints
from .notices import SOURCE_PREFIX, PeerNotices, notice_body

log = logs.get_logger()


class GroupRun:
    def __init__(self, settings: GroupSettings, store: Store, job_id: str) -> None:
        self.settings = settings
        self.group = Group(store, job_id, settings.size)
        self.job = RankStore(store, job_id, settings.rank)
        self.attempt = 0
        self.checkpoints: GroupCheckpoints | None = None

    def claimed(self, attempt: int, inner: Checkpoints, directory: Path) -> GroupCheckpoints:
        self.attempt = attempt
        own_only = self.settings.restore == "own"
        self.checkpoints = GroupCheckpoints(inner, self.group, self.job, own_only, directory)
        return self.checkpoints

    def sources(self) -> tuple[NoticeSource, ...]:
        """The watcher of the peers' notices (runs in the start-up worker: one listing)."""
        rank, every = self.settings.rank, self.settings.watch_interval
        return (PeerNotices(self.group, rank, self._started(), every),)

    def _started(self) -> datetime | None:
        """This attempt's start on the store's clock: when its attempt object was stored."""
        key = self.job.attempt_key(self.attempt)
        try:
            for obj in self.group.store.list_objects(self.job.folder(ATTEMPTS)):
                if obj.key == key:
                    return obj.modified
        except CheckpointError as exc:
            log.warning("group.start_unknown", error=str(exc), action="every notice counts")
        return None

    def announce(self, notice: Notice) -> None:
        """Tell the group (in a worker): an interruption this agent saw itself."""
        if notice.source.startswith(SOURCE_PREFIX):
            return  # a peer's: it is in the store already
        key = self.job.notice_key(self.settings.rank, self.attempt)
        try:
            created = self.group.store.put_object_if_absent(
                key, notice_body(notice, self.settings.rank, self.attempt)
            )
        except CheckpointError as exc:
            log.error("group.notice_not_sent", error=str(exc), source=notice.source)
            return
        if created:
            log.info("group.notice_sent", key=key, source=notice.source)

    def wait_complete(self, seconds: float) -> bool:
        assert self.checkpoints is not None
        return self.checkpoints.wait_complete(seconds)
