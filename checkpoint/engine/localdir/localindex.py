"""The local index: proof, by stat alone, that the checkpoint dir holds a checkpoint.

Written into ``.spot-agent/index.sqlite`` after every commit and every restore into the
dir; read by restore, so that a retry on the same host (a container restart, the same
instance) keeps the files it already has without reading them again.

As git's index does, it records each file's stat (size, mtime, ctime, inode, device) with
the chunks its bytes were hashed into, and trusts a file only while every one of them still
matches. What it records comes from the sync's stat cache (:class:`.statcache.StatCache`):
stats taken when the bytes were hashed (or restored), never a later stat that could belong
to bytes written since. A file is trusted only when, besides:

- the kernel's boot id is the one the index was written in: restore does not fsync each
  file, so after a host crash (a reboot) pages the index vouched for may be lost;
- the index is for the very manifest being restored (job id and sequence), and the file's
  chunks equal the manifest's for its path (so pack locations must match too);
- it is not "racy": a file whose mtime or ctime is not older than the index file's own
  mtime (the same clock and granularity) may have been written again within one timestamp
  tick, unseen by its stat (git's racy case). The stat cache also keeps no file written
  in the last two seconds (``stats.RACY_SECONDS``).

Anything unexpected (no index, another boot, garbage, a damaged page met half way) means
"read the file", never an error; an ``index.json`` of an older agent is never read.

The file itself (SQLite, paged, written atomically) is :mod:`.indexfile`'s; keeping rows
across the agent's own unlinks is :mod:`.keptacross`'s.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog

from ..config import DEFAULTS
from ..format.manifest import MODE_BITS, Chunk, FileEntry, Manifest
from .indexfile import (
    FORMAT,
    STAT_ROW,
    Head,
    Row,
    boot_id,
    chunk_bytes,
    damaged,
    index_path,
    not_racy,
    open_index,
    stat_bytes,
    update_rows,
    why,
    write_rows,
)
from .statcache import StatCache

log = structlog.get_logger("checkpoint")

#: rows a restore reads at once, in path order (a few hundred KiB)
RANGE_ROWS = 1024


def write_index(
    directory: Path,
    manifest: Manifest,
    cache: StatCache,
    *,
    boot_id_path: Path = DEFAULTS.boot_id_path,
    since: int | None = None,
) -> bool:
    """Record the files of ``manifest`` whose stat ``cache`` vouches for (same chunks).

    ``since``: the sequence of the manifest the dir's index was last written for from this
    ``cache`` (:meth:`.statcache.StatCache.mark` called then): only the rows of the paths
    the cache says changed since are written, on a copy of that index. Otherwise, or when
    the index there is not that one, every row is written anew.

    Returns whether an index was written: not without a boot id, nor on a local error
    (logged, never raised: the checkpoint itself is committed already).
    """
    boot = boot_id(boot_id_path)
    if boot is None:
        return False
    head = (FORMAT, manifest.job_id, manifest.sequence, boot)
    changed = cache.changes() if since is not None else None
    try:
        if since is not None and changed is not None:
            rows, gone = _changed_rows(manifest, cache, changed)
            if update_rows(directory, head, (FORMAT, manifest.job_id, since, boot), rows, gone):
                return True
        write_rows(directory, head, _rows(manifest.files, cache))
    except (OSError, sqlite3.Error) as exc:
        log.warning(
            "index.write_failed",
            path=str(index_path(directory)),
            error=why(exc),
            action="the next restore into this dir reads every file to check it",
        )
        return False
    return True


def _row(f: FileEntry, cache: StatCache) -> Row | None:
    """The row of ``f``, if ``cache`` vouches for its bytes."""
    known = cache.vouched(f.path)
    # The cache holds the chunks as hashed (content); the manifest's carry their place
    # too (a pack and an offset), filled in once the uploads ended: compare content,
    # record places.
    if known is None or known[1] < 0 or not same_content(known[2], f.chunks):
        return None
    (size, mtime_ns, ctime_ns, ino), dev, _ = known
    return (
        os.fsencode(f.path),
        STAT_ROW.pack(size, mtime_ns, ctime_ns, ino, dev),
        chunk_bytes(f.chunks),
    )


def _rows(files: Iterable[FileEntry], cache: StatCache) -> Iterator[Row]:
    for f in files:
        row = _row(f, cache)
        if row is not None:
            yield row


def _changed_rows(
    manifest: Manifest, cache: StatCache, changed: Iterable[str]
) -> tuple[list[Row], list[bytes]]:
    """The rows of the ``changed`` paths that ``manifest`` has and ``cache`` vouches for,
    and the paths of the others (their rows go). A file is found by a search of the
    manifest's files in the walk's order; one a search misses loses its row, which costs
    a read of the file at a restore, never a wrong row."""
    files = manifest.files
    rows: list[Row] = []
    gone: list[bytes] = []
    for path in sorted(changed):
        key = path.split("/")
        i = bisect_left(files, key, key=_order)
        row = _row(files[i], cache) if i < len(files) and files[i].path == path else None
        if row is None:
            gone.append(os.fsencode(path))
        else:
            rows.append(row)
    return rows, gone


def _order(f: FileEntry) -> list[str]:
    return f.path.split("/")


def same_content(a: tuple[Chunk, ...], b: tuple[Chunk, ...]) -> bool:
    """The same bytes, wherever they are stored."""
    return len(a) == len(b) and all(
        x.digest == y.digest and x.size == y.size for x, y in zip(a, b, strict=True)
    )


class LocalIndex:
    """An open index that holds for one manifest: :meth:`vouches` file by file, each row
    read from the file when it is asked for."""

    def __init__(self, db: sqlite3.Connection, written_ns: int, path: Path) -> None:
        self._db: sqlite3.Connection | None = db  # None: found damaged, trusted no more
        self._path = path
        self.written_ns = written_ns  # the index file's mtime: files not older are racy
        #: the rows of the last range read: every row with a path in [_low, _high]
        #: (_high None: to the end of the table)
        self._rows: dict[bytes, tuple[bytes, bytes]] = {}
        self._low: bytes | None = None
        self._high: bytes | None = None

    def __len__(self) -> int:
        if self._db is None:
            return 0
        return int(self._db.execute("SELECT count(*) FROM files").fetchone()[0])

    @classmethod
    def load(
        cls, directory: Path, manifest: Manifest, *, boot_id_path: Path = DEFAULTS.boot_id_path
    ) -> LocalIndex | None:
        """The dir's index if it may vouch for files of ``manifest``; None otherwise
        (absent; damaged: warned; another boot, job or checkpoint: logged)."""
        found = open_index(directory)
        if found is None:
            return None
        db, head, written_ns = found
        why = _untrusted(head, manifest, boot_id(boot_id_path))
        if why is not None:
            db.close()
            path = str(index_path(directory))
            log.info("index.not_trusted", path=path, why=why, action="reading every file")
            return None
        return cls(db, written_ns, index_path(directory))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def vouches(self, f: FileEntry, st: os.stat_result) -> bool:
        """Does ``st`` (an lstat of ``f.path``) prove the file holds ``f``'s bytes?"""
        if not (  # the cheap refusals first, before the row is read
            st.st_mtime_ns == f.mtime_ns
            and st.st_size == f.size
            and st.st_mode & MODE_BITS == f.mode
            and stat.S_ISREG(st.st_mode)
            and not_racy(st, self.written_ns)
        ):
            return False
        try:
            row = self._row(os.fsencode(f.path))
        except (sqlite3.Error, ValueError) as exc:  # a damaged page, met half way
            damaged(self._path, why(exc))
            self.close()  # once: every file from here on is read
            return False
        return row is not None and row[0] == stat_bytes(st) and row[1] == chunk_bytes(f.chunks)

    def _row(self, key: bytes) -> tuple[bytes, bytes] | None:
        """The row of ``key`` (a path's bytes), read with the next :data:`RANGE_ROWS` rows
        in path order: files of a manifest come a directory at a time, in name order, so
        one query serves many files (one query a file costs ~4 us more each)."""
        if self._db is None:
            return None
        low, high = self._low, self._high
        if low is None or key < low or (high is not None and key > high):
            found = self._db.execute(
                "SELECT path, stat, chunks FROM files WHERE path >= ? ORDER BY path LIMIT ?",
                (key, RANGE_ROWS),
            ).fetchall()
            self._rows = {p: (st, chunks) for p, st, chunks in found}
            self._low = key
            self._high = found[-1][0] if len(found) == RANGE_ROWS else None
        return self._rows.get(key)


def _untrusted(head: Head, manifest: Manifest, current: str | None) -> str | None:
    fmt, job_id, sequence, boot = head
    if fmt != FORMAT:
        return f"written by another version (format {fmt!r})"
    if job_id != manifest.job_id or sequence != manifest.sequence:
        return f"for job {job_id!r} checkpoint {sequence!r}, not this one"
    if current is None or boot != current:
        return "written before the last reboot: pages not flushed then may be lost"
    return None
