"""The log lines of a restore and a sync: what an operator reads to follow a job."""

from __future__ import annotations

from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.sync import SyncResult

from .. import logs

log = logs.get_logger()


def rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def log_restore(r: RestoreResult) -> None:
    if r.manifest is None:
        log.info(
            "restore.none",
            why="no checkpoint yet: the job starts fresh",
            damaged_skipped=len(r.skipped),
        )
        return
    log.info(
        "restore.done",
        sequence=r.manifest.sequence,
        created=r.manifest.created,
        files=len(r.manifest.files),
        bytes=r.manifest.size,
        files_downloaded=r.files_written,
        files_already_present=r.files_kept,
        files_indexed=r.files_indexed,
        bytes_hashed=r.bytes_hashed,
        bytes_downloaded=r.bytes_downloaded,
        seconds=rounded(r.seconds),
        progress=r.manifest.progress or None,
    )
    if r.extra_files:
        log.warning(
            "restore.extra_files",
            count=r.extra_files,
            why="files in the checkpoint dir that the checkpoint does not have; left in place",
        )


def log_sync(r: SyncResult, standing: int | None) -> None:
    """``standing``: the newest committed checkpoint once this sync is done."""
    common = {
        "reason": r.reason,
        "files": r.files,
        "bytes": r.bytes_total,
        "bytes_uploaded": r.bytes_uploaded,
        "bytes_skipped": r.bytes_total - r.bytes_uploaded,
        "bytes_hashed": r.bytes_hashed,
        # objects written: chunks stored (alone or packed) and the packs that carried them
        "chunks_uploaded": r.chunks_uploaded,
        "packs_uploaded": r.packs_uploaded,
        "seconds": rounded(r.seconds),
        "freeze_seconds": rounded(r.freeze_seconds),
        "freeze_bytes_held": r.freeze_bytes_held,
    }
    if r.left_out:
        common["left_out"] = list(r.left_out)
    if r.sequence is None:
        # Nothing new to commit: the job still stands on the checkpoint it had.
        log.info("sync.unchanged", sequence=standing, nothing_new=True, **common)
    else:
        log.info("sync.committed", sequence=r.sequence, **common)
