"""A rank's checkpoints: each commit is this rank's part; a group record completes it.

Wraps the loop's checkpoints (:class:`Checkpoints`, the same interface) around a
:class:`checkpoint.engine.group.RankStore`:

- restore: only what a group record names (the union of its parts, or the rank's own);
- after each sync: if the committed part carries a save label, look for every rank's part
  of that label and write the group record once all are there;
- prune: never the parts the newest group records name.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from checkpoint.engine.group import Group, GroupRecord, PathConflict, RankStore, label_of
from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.sync import SyncResult
from checkpoint.errors import CheckpointError
from checkpoint.protocol import RESERVED_DIR, SAVE_LABEL_NAME

from .. import logs
from ..checkpoint_view import Checkpoints, WrappedCheckpoints

log = logs.get_logger()

#: how often a rank waiting for the others' parts looks again
LOOK_EVERY = 0.5


class GroupCheckpoints(WrappedCheckpoints):
    def __init__(
        self,
        inner: Checkpoints,
        group: Group,
        job: RankStore,
        own_only: bool,
        directory: Path,
    ) -> None:
        super().__init__(inner)
        self.group = group
        self.job = job
        self.own_only = own_only
        self.directory = directory
        self.record: GroupRecord | None = None  # the newest record this rank saw or wrote
        self._conflicted: str | None = None  # a label refused once is not looked at again

    def restore(self) -> RestoreResult:
        # A label left by an earlier run on this disk is not the restored state's.
        with contextlib.suppress(FileNotFoundError):
            (self.directory / RESERVED_DIR / SAVE_LABEL_NAME).unlink()
        records = list(self.group.records())
        self.job.show(self.group.restore_view(self.job.rank, self.own_only))
        try:
            result = self.inner.restore()
        finally:
            self.job.show(None)
        restored = result.manifest
        if restored is not None:
            self.record = next(
                (r for r in records if r.parts[self.job.rank] == restored.sequence), None
            )
        log.info(
            "group.restored",
            rank=self.job.rank,
            group_checkpoint=self.record.sequence if self.record else None,
            label=self.record.label if self.record else None,
            part=restored.sequence if restored else None,
            files="own" if self.own_only else "all ranks",
            group_checkpoints=len(records),
        )
        return result

    def sync_once(self, reason: str) -> SyncResult:
        result = self.inner.sync_once(reason)
        self.complete()
        return result

    def complete(self) -> bool:
        """Write (or find) the group record of the newest part's label: True once it exists."""
        base = self.inner.base
        label = label_of(base) if base is not None else None
        if label is None or label == self._conflicted:
            return False
        if self.record is not None and self.record.label == label:
            return True
        try:
            record = self.group.complete(label, writer=self.job.rank)
        except PathConflict as exc:
            self._conflicted = label
            log.error(
                "group.conflict",
                label=label,
                paths=exc.paths[:20],
                error=str(exc),
                action="no group checkpoint of this save point; give each rank its own names",
            )
            return False
        except CheckpointError as exc:
            log.warning("group.look_failed", label=label, error=str(exc))
            return False
        if record is None:
            return False
        if self.record is None or record.sequence > self.record.sequence:
            self.record = record
            log.info(
                "group.committed",
                group_checkpoint=record.sequence,
                label=record.label,
                parts=list(record.parts),
                writer=record.writer,
            )
        return True

    def wait_complete(self, seconds: float) -> bool:
        """After the final sync: look until the group record of this rank's last part
        exists, for at most ``seconds``. False: a rank did not commit that save point."""
        end = time.monotonic() + seconds
        while True:
            if self.complete():
                return True
            if time.monotonic() + LOOK_EVERY >= end:
                return False
            time.sleep(LOOK_EVERY)

    def prune(self, keep: int) -> list[int]:
        """The rank's own pruning, which never drops a part the newest records name."""
        self.job.pinned = frozenset(self.group.referenced(self.job.rank))
        return self.inner.prune(keep)
