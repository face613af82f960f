"""Each file of a sync to its manifest entry: on the stat cache's word, or read and hashed.

A file whose stat matches what the cache remembers (and whose chunks are all stored) is
taken as it was; any other is read, its chunks handed to the uploader as they are hashed,
and its stat compared before and after the read: a file that changed while it was read is
read again (live dir) or reported (a freeze is frozen again, never read twice).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Container, Iterable
from pathlib import Path

import structlog

from checkpoint.errors import CheckpointError

from ..format import hashes
from ..format.manifest import Chunk, FileEntry, shared_mode
from ..localdir.scan import NotRegularFile, hash_file
from ..localdir.statcache import StatCache
from .upload import Uploader

log = structlog.get_logger("checkpoint")

#: how a file is read: (path, chunk size, where each chunk goes) -> (chunks, stat after)
HashFile = Callable[
    [Path, int, Callable[[Chunk, bytes], None], hashes.Identify],
    tuple[tuple[Chunk, ...], os.stat_result],
]


class FileChanged(CheckpointError):
    """A file kept changing while it was read; the sync is abandoned, not committed torn."""


class FrozenFilesChanged(FileChanged):
    """Files of a freeze were written in place after it: the freeze is not one save."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(f"{len(paths)} file(s) changed in place after the freeze: {paths[:5]}")
        self.paths = paths


def to_read(
    files: Iterable[tuple[str, os.stat_result]],
    cache: StatCache,
    present: Container[str],
    rehash: Callable[[os.stat_result], bool] | None,
) -> tuple[int, list[FileEntry | None]]:
    """Data bytes (not holes) of the files a sync will read, what its progress counts; and
    for each file, in order, the entry the stat cache vouches for, or None: to read. The
    reading takes them as they are (:meth:`FileReader.read`): one look at the cache a file.
    """
    todo = 0
    vouched: list[FileEntry | None] = []
    for rel, st in files:
        cached = None if rehash is not None and rehash(st) else cache.unchanged(rel, st, present)
        vouched.append(cached)
        if cached is None:
            todo += min(st.st_size, st.st_blocks * 512)
    return todo, vouched


class FileReader:
    """One sync's reading of files: from ``root`` (the dir, or a freeze of it)."""

    def __init__(
        self,
        directory: Path,
        root: Path,
        cache: StatCache,
        uploader: Uploader,
        *,
        chunk_size: int,
        pack_threshold: int,
        frozen_relinked: dict[str, os.stat_result] | None,
        hash_file: HashFile = hash_file,
    ) -> None:
        self.directory = directory  # the job's dir: named in messages
        self.root = root
        self.cache = cache
        self.uploader = uploader
        self.chunk_size = chunk_size
        self.pack_threshold = pack_threshold
        #: None for the live dir; for a freeze, the stats its links moved
        self.relinked = frozen_relinked
        self.hash_file = hash_file

    def read(
        self,
        files: Iterable[tuple[str, os.stat_result]],
        vouched: Iterable[FileEntry | None],
        left_out: list[tuple[str, str]],
    ) -> tuple[list[FileEntry], list[str], int]:
        """Every file's entry, the files of a freeze that changed in place, bytes read.
        ``vouched``: what :func:`to_read` found in the stat cache for each of ``files``.
        A live file that kept changing goes to ``left_out``."""
        entries: list[FileEntry] = []
        changed: list[str] = []
        hashed = 0
        for (rel, st), cached in zip(files, vouched, strict=True):
            try:
                entry, n = self.entry(rel, st, cached)
            except FileChanged as exc:
                if self.relinked is not None:  # the freeze is torn: the caller freezes again
                    changed.append(rel)
                else:
                    left_out.append((rel, str(exc)))
                continue
            if entry is not None:
                entries.append(entry)
                hashed += n
        return entries, changed, hashed

    def entry(
        self, rel: str, st: os.stat_result, cached: FileEntry | None
    ) -> tuple[FileEntry | None, int]:
        """The file's entry (None: it is gone, or not a file any more) and the bytes read;
        ``cached``: the entry the stat cache vouches for (:func:`to_read`), None to read."""
        if cached is not None:
            same_mode = cached.mode == _mode(st)
            if not same_mode:  # the stat key has no mode (a chmod moves ctime)
                cached = FileEntry(
                    cached.path, cached.size, _mode(st), cached.mtime_ns, cached.chunks
                )
            relinked = self.relinked.get(rel) if self.relinked is not None else None
            # A link in a freeze moved ctime: the row changes. Else it is kept as it was.
            self.cache.remember(cached, relinked or st, kept=same_mode and relinked is None)
            # The entry remembered (after a commit, the committed one) as it is: a file
            # the stat cache vouches for costs no new entry, path or chunks.
            return cached, 0
        path = self.root / rel
        put = self.uploader.pack if st.st_size < self.pack_threshold else self.uploader.put
        known = self.cache.vouched(rel)  # what it held: sha256 chunks that did not change stay
        identify = hashes.carrying(c.digest for c in known[2]) if known else hashes.new_id
        for _ in range(1 if self.relinked is not None else 3):  # a freeze is frozen again
            try:
                chunks, after = self.hash_file(path, self.chunk_size, put, identify)
            except FileNotFoundError:
                return None, 0  # deleted while we walked: not part of this checkpoint
            except PermissionError as exc:
                shown = self.directory / rel  # the job's file, not the freeze's link
                raise CheckpointError(f"cannot read {shown}: {exc.strerror}") from exc
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENAMETOOLONG):
                    raise
                log.warning("sync.file_skipped", path=rel, why=exc.strerror)
                return None, 0
            except NotRegularFile as exc:
                log.warning("sync.file_skipped", path=rel, why=str(exc))
                return None, 0
            if (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                size = after.st_size
                if len(chunks) == 1 and chunks[0].size == size:  # one int object for both
                    size = chunks[0].size
                entry = FileEntry(rel, size, _mode(after), after.st_mtime_ns, chunks)
                self.cache.remember(entry, after)
                return entry, size
            st = after  # changed while we read it: read it again
        raise FileChanged(
            f"{self.directory / rel} kept changing while it was read; not committing a torn copy"
        )


def _mode(st: os.stat_result) -> int:
    """The file's permission bits, one int object per distinct mode (not one per file)."""
    return shared_mode(st.st_mode & 0o777)
