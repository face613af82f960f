"""The staging dir of a restore, inside the checkpoint dir's reserved dir: files are
downloaded there and moved into place only once every byte has arrived."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import structlog

from checkpoint.protocol import RESERVED_DIR

from .placement import rmtree

log = structlog.get_logger("checkpoint")

STAGING_PREFIX = "restore-"


@contextlib.contextmanager
def staging_dir(dest: Path) -> Iterator[Path]:
    """A new, empty staging dir for a restore into ``dest`` (made if missing), removed
    however the restore ends; leftovers of restores that were killed are removed first."""
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    remove_stale_staging(dest)
    staging = dest / RESERVED_DIR / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True, mode=0o700)
    try:
        yield staging
    finally:
        rmtree(staging)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # only if empty: it may hold the job's progress


def remove_stale_staging(dest: Path) -> None:
    """Staging dirs of restores that were killed (``kill -9``) before they cleaned up.

    Only one restore runs into a checkpoint dir at a time (the agent holds the dir), so
    any staging dir found before ours starts is a leftover.
    """
    reserved = dest / RESERVED_DIR
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(reserved):
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
                log.info("restore.stale_staging_removed", path=entry.path)
                rmtree(Path(entry.path))
