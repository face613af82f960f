"""One checkpoint dir and one job's checkpoints, kept in step: sync and restore together.

The only module that knows both directions (:mod:`.save` and :mod:`.restore` never import
each other). A restore tells the save side what it placed, so the next sync hashes nothing
the restore already proved, takes the restored manifest as its base, and never prunes a
checkpoint the restore had to pass over. It takes the engine's tunables as one
:class:`~checkpoint.engine.config.EngineConfig` and gives each side the fields it uses.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .config import DEFAULTS, EngineConfig
from .format.jobstore import JobStore
from .progress import Listener
from .restore.restore import Restorer, RestoreResult
from .save.sync import Syncer


class Checkpointer(Syncer):
    """Keeps one checkpoint dir and one job's checkpoints in step."""

    def __init__(
        self,
        job: JobStore,
        directory: Path,
        *,
        attempt: int = 0,
        progress: Listener | None = None,
        config: EngineConfig = DEFAULTS,
        chunk_size: int | None = None,
        max_bytes_in_flight: int | None = None,
        pack_threshold: int | None = None,
        paged_above: int | None = None,
    ) -> None:
        """The keywords after ``config`` replace single fields of it: ``chunk_size=1024``
        is short for ``config=EngineConfig(chunk_size=1024)``."""
        config = replace(
            config,
            chunk_size=config.chunk_size if chunk_size is None else chunk_size,
            max_bytes_in_flight=(
                config.max_bytes_in_flight if max_bytes_in_flight is None else max_bytes_in_flight
            ),
            pack_threshold=config.pack_threshold if pack_threshold is None else pack_threshold,
            paged_above=config.paged_above if paged_above is None else paged_above,
        )
        self.config = config
        super().__init__(
            job,
            directory,
            attempt=attempt,
            progress=progress,
            config=config,
        )

    def restore(
        self, sequence: int | None = None, into: Path | None = None, *, streamed: bool = False
    ) -> RestoreResult:
        """Restore ``sequence`` (default: the newest intact checkpoint) into the dir.

        A checkpoint whose manifest is malformed or whose blobs are missing or damaged is
        passed over, loudly, for the one before it. Raises :class:`CheckpointDamaged` only
        when an explicitly requested sequence cannot be restored.

        ``streamed``: into an empty dir, a paged checkpoint is restored a page at a time, in
        memory bounded by a page rather than by the checkpoint (:mod:`.restore.streamed`).
        Its files are then never all known here, and this Checkpointer takes no base from
        it: for a restore that is not synced from (``checkpoints restore``).
        """
        with self._lock:
            restorer = Restorer(self.job, self._pool, self.progress, config=self.config)
            result = restorer.restore(sequence, into or self.directory, streamed=streamed)
            if result.streamed:
                return result
            self.restored(
                result.manifest,
                passed_over=[seq for seq, _ in result.skipped],
                into=into,
                stats=restorer.stats,
                present=restorer.present,
                files_indexed=result.files_indexed,
            )
            return result
