"""One checkpoint dir and one job's checkpoints, kept in step: sync and restore together.

The only module that knows both directions (:mod:`.save` and :mod:`.restore` never import
each other). A restore tells the save side what it placed, so the next sync hashes nothing
the restore already proved, takes the restored manifest as its base, and never prunes a
checkpoint the restore had to pass over.
"""

from __future__ import annotations

from pathlib import Path

from .restore.restore import Restorer, RestoreResult
from .save.sync import Syncer


class Checkpointer(Syncer):
    """Keeps one checkpoint dir and one job's checkpoints in step."""

    def restore(self, sequence: int | None = None, into: Path | None = None) -> RestoreResult:
        """Restore ``sequence`` (default: the newest intact checkpoint) into the dir.

        A checkpoint whose manifest is malformed or whose blobs are missing or damaged is
        passed over, loudly, for the one before it. Raises :class:`CheckpointDamaged` only
        when an explicitly requested sequence cannot be restored.
        """
        with self._lock:
            restorer = Restorer(
                self.job, self._pool, self.progress, max_bytes_in_flight=self.max_bytes_in_flight
            )
            result = restorer.restore(sequence, into or self.directory)
            self.restored(
                result.manifest,
                passed_over=[seq for seq, _ in result.skipped],
                into=into,
                stats=restorer.stats,
                present=restorer.present,
                files_indexed=result.files_indexed,
            )
            return result
