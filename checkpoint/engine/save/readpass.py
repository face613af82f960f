"""One sync's pass over the dir: list it, read what changed, upload what the store lacks.

:meth:`DirReader.read_and_upload` is the first half of :meth:`.sync.Syncer.sync_once`,
before the manifest is assembled: it lists the dir (or takes a freeze's listing), reads
the files the stat cache cannot vouch for, uploads their new chunks, packs again small
files in sparse packs when nothing changed under a freeze, and waits for every upload.
What reached the store is recorded in the known chunks however the pass ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ..config import EngineConfig
from ..format.jobstore import JobStore
from ..format.manifest import FileEntry
from ..localdir.scan import Scan, scan_frozen
from ..localdir.statcache import StatCache
from ..progress import Listener, Progress
from .entries import FileReader, FrozenFilesChanged, HashFile, to_read
from .known import KnownChunks
from .repack import repack_sparse
from .upload import Location, Stored, Uploader

if TYPE_CHECKING:
    from .freeze import Frozen

log = structlog.get_logger("checkpoint")


@dataclass
class ReadPass:
    """What the pass read and stored, for the manifest to be assembled from."""

    root: Path  # the dir, or the freeze it was read from
    found: Scan  # the listing (its files' stats are cleared once read)
    left_out: list[tuple[str, str]]  # files that kept changing, and why
    entries: list[FileEntry]
    stored: Stored  # chunks known to be stored when the pass began (repack forgets some)
    uploader: Uploader
    moved: dict[str, Location]  # chunks of sparse packs: their old places
    hashed: int  # bytes read


@dataclass
class DirReader:
    """What a pass needs of its :class:`~.sync.Syncer`: the dir, its store, its state."""

    job: JobStore
    directory: Path
    pool: ThreadPoolExecutor
    config: EngineConfig
    cache: StatCache
    known: KnownChunks
    listener: Listener | None
    scan: Callable[[Path], Scan]
    hash_file: HashFile

    def read_and_upload(
        self, frozen: Frozen | None, rehash: Callable[[os.stat_result], bool] | None
    ) -> ReadPass:
        """Read the dir as it is (or as ``frozen`` holds it) and upload what is new.

        Raises :class:`FrozenFilesChanged` when files of a freeze changed in place: the
        uploads are waited for and recorded first.
        """
        if frozen is None:
            root, found, left_out = self.directory, self.scan(self.directory), []
        else:
            root, left_out = frozen.root, list(frozen.left_out)
            found = scan_frozen(frozen, self.directory)
        for path, why in found.skipped:
            log.warning("sync.file_skipped", path=path, why=why)
        cfg = self.config
        stored = self.known.stored()  # also what the stat cache may vouch for
        todo, vouched = to_read(found.files, self.cache, stored, rehash)
        every = cfg.progress_seconds
        progress = Progress("sync.progress", todo, listener=self.listener, every=every)
        uploader = Uploader(
            self.job, self.pool, stored, progress, max_bytes_in_flight=cfg.max_bytes_in_flight
        )
        reader = FileReader(
            self.directory,
            root,
            self.cache,
            uploader,
            chunk_size=cfg.chunk_size,
            pack_threshold=cfg.pack_threshold,
            frozen_relinked=None if frozen is None else frozen.relinked,
            hash_file=self.hash_file,
        )
        moved: dict[str, Location] = {}
        try:
            self.cache.begin()  # the files read now are what it remembers
            try:
                entries, changed, hashed = reader.read(found.files, vouched, left_out)
            except BaseException:
                self.cache.drop()
                raise
            self.cache.take()
            found.files.clear()  # the stat of every file: not needed beyond this point
            del vouched
            if not changed:
                moved = repack_sparse(
                    entries,
                    uploader,
                    stored,
                    root,
                    self.known.packs,
                    pack_threshold=cfg.pack_threshold,
                    chunk_size=cfg.chunk_size,
                )
        finally:
            try:
                uploader.wait()
            finally:  # what did reach the store counts, even when the sync fails
                self.known.record(uploader)
        if changed:
            raise FrozenFilesChanged(changed)
        return ReadPass(root, found, left_out, entries, stored, uploader, moved, hashed)
