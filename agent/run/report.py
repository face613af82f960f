"""The log lines of a start, a restore and a sync: what an operator reads to follow a job."""

from __future__ import annotations

from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.sync import SyncResult
from checkpoint.protocol import CUT_OFF_SAVE_ENV

from .. import logs
from ..config import Settings

log = logs.get_logger()


def rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def log_start(s: Settings, pid: int) -> None:
    """``agent.start``: the attempt is claimed and this is how it will run."""
    log.info(
        "agent.start",
        command=list(s.command),
        store=s.checkpoint_uri,
        checkpoint_dir=str(s.checkpoint_dir),
        job_id_source=s.job_id_source,
        batch_attempt=s.batch_attempt,
        sync_interval=s.sync_interval,
        max_pending_upload=s.max_pending_upload,
        grace_period=s.grace_period,
        upload_reserve=rounded(s.upload_reserve),
        pid=pid,
    )


def log_restore(r: RestoreResult) -> None:
    if r.cut_off_save is not None:
        log.warning(
            "restore.cut_off_save",
            saver=r.cut_off_save or None,
            why="a save began and never finished (its process was killed): the dir may "
            "hold half of it",
            action="nothing is committed until the job completes a save; the job sees "
            f"{CUT_OFF_SAVE_ENV}=1"
            if r.cut_off_kept
            else f"replaced by checkpoint {r.manifest.sequence if r.manifest else None}",
        )
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
    if r.aside is not None and r.aside.entries:
        log.warning(
            "restore.extra_files",
            count=r.aside.files,
            entries=r.aside.entries,
            why="entries in the checkpoint dir that the checkpoint does not have",
            action="moved out of the job's sight; only the last restore's are kept",
            moved_to=str(r.aside.where),
            deleted=r.aside.deleted,
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
