"""What a sync remembers of each file's stat, compactly: the scan's packed stats
(:class:`FileStats`), a restore's stats of the files it kept (:class:`StatMap`), and the
stat cache (:class:`StatCache`), which lets the next sync skip a file whose stat has not
moved since it was hashed.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Container, Iterator, MutableMapping

from ..format.manifest import Chunk, FileEntry

#: A file whose mtime is this recent is hashed again next time even if it looks unchanged:
#: a second write within the filesystem's timestamp granularity would otherwise be missed.
RACY_SECONDS = 2.0

StatKey = tuple[int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    # ctime too: `cp -p`, `touch -r` or os.utime can give rewritten bytes their old mtime.
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class FileStats:
    """Files and their lstat, packed: the scan of a big tree holds ~60 bytes of numbers a
    file (an ``os.stat_result`` with its int and float objects takes ~600).

    Only what a sync reads of a stat is kept: mode, inode, device, size, mtime, ctime and
    blocks; a file's stat is rebuilt as an ``os.stat_result`` when it is read (its uid,
    gid, nlink and atime are 0).
    """

    __slots__ = ("_packed", "_rels")

    def __init__(self) -> None:
        self._rels: list[str] = []
        self._packed = bytearray()

    def append(self, item: tuple[str, os.stat_result]) -> None:
        rel, st = item
        self._rels.append(rel)
        self._packed += _pack(st)

    def __len__(self) -> int:
        return len(self._rels)

    def __iter__(self) -> Iterator[tuple[str, os.stat_result]]:
        size = _ROW.size
        for i, rel in enumerate(self._rels):
            yield rel, _unpack(self._packed, i * size)

    def clear(self) -> None:
        self._rels = []
        self._packed = bytearray()


_ROW = struct.Struct("=IQQqqqq")  # mode, ino, dev, size, mtime_ns, ctime_ns, blocks


def _pack(st: os.stat_result) -> bytes:
    return _ROW.pack(
        st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_blocks
    )


def _unpack(packed: bytes | bytearray, at: int = 0) -> os.stat_result:
    """The stat :func:`_pack` packed (uid, gid, nlink and atime 0)."""
    mode, ino, dev, nbytes, mtime_ns, ctime_ns, blocks = _ROW.unpack_from(packed, at)
    return os.stat_result(
        (mode, ino, dev, 0, 0, 0, nbytes, 0, mtime_ns // 10**9, ctime_ns // 10**9),
        {
            "st_mtime": mtime_ns / 1e9,
            "st_ctime": ctime_ns / 1e9,
            "st_mtime_ns": mtime_ns,
            "st_ctime_ns": ctime_ns,
            "st_blocks": blocks,
        },
    )


class StatMap(MutableMapping[str, os.stat_result]):
    """Stats by path, each packed as :class:`FileStats` packs them (~130 bytes a file
    with its dict slot, against ~380 for an ``os.stat_result``); read back as one."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[str, bytes] = {}

    def __setitem__(self, rel: str, st: os.stat_result) -> None:
        self._rows[rel] = _pack(st)

    def __getitem__(self, rel: str) -> os.stat_result:
        return _unpack(self._rows[rel])

    def __delitem__(self, rel: str) -> None:
        del self._rows[rel]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


#: a cache entry's stat, packed: size, mtime, ctime, inode (the key), device
_KEY = struct.Struct("=qqqQQ")


class StatCache:
    """Entries of files hashed before, trusted while size, mtime, ctime and inode match.

    One row a file: its stat packed in 40 bytes of one shared array, and its entry (after
    a commit, the very entry of the committed manifest: see :meth:`share`), which the next
    sync takes as it is for a file whose stat has not moved: no second entry, path or
    chunks. A path maps to its row number. Rows of files forgotten (written again too
    recently) are reused.
    """

    __slots__ = ("_entries", "_free", "_rows", "_stats")

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._stats = bytearray()  # row i at [i * _KEY.size, (i + 1) * _KEY.size)
        self._entries: list[FileEntry | None] = []
        self._free: list[int] = []

    def remember(self, entry: FileEntry, st: os.stat_result) -> None:
        """``entry`` holds the bytes the file had at ``st`` (its stat when they were hashed
        or restored)."""
        rel = entry.path
        if time.time_ns() - st.st_mtime_ns <= RACY_SECONDS * 1e9:
            row = self._rows.pop(rel, None)
            if row is not None:
                self._entries[row] = None
                self._free.append(row)
            return
        row = self._rows.get(rel)
        if row is None:
            if self._free:
                row = self._free.pop()
            else:
                row = len(self._entries)
                self._entries.append(None)
                self._stats += bytes(_KEY.size)
            self._rows[rel] = row
        _KEY.pack_into(self._stats, row * _KEY.size, *stat_key(st), st.st_dev)
        self._entries[row] = entry

    def _row(self, rel: str) -> tuple[tuple[int, int, int, int, int], FileEntry] | None:
        """(size, mtime, ctime, inode, device) and the entry remembered for ``rel``."""
        row = self._rows.get(rel)
        if row is None:
            return None
        entry = self._entries[row]
        assert entry is not None  # a row in use
        return _KEY.unpack_from(self._stats, row * _KEY.size), entry

    def unchanged(self, rel: str, st: os.stat_result, present: Container[str]) -> FileEntry | None:
        """The entry of a file that has not changed since its chunks were hashed and
        uploaded (its mode may have: the caller compares)."""
        cached = self._row(rel)
        if cached is None or not all(c.is_hole or c.sha256 in present for c in cached[1].chunks):
            return None
        if cached[0][:4] != stat_key(st):
            return None
        return cached[1]

    def vouched(self, rel: str) -> tuple[StatKey, int, tuple[Chunk, ...]] | None:
        """(stat key, device, chunks) remembered for ``rel``: what the local index records."""
        cached = self._row(rel)
        if cached is None:
            return None
        (size, mtime_ns, ctime_ns, ino, dev), entry = cached
        return (size, mtime_ns, ctime_ns, ino), dev, entry.chunks

    def share(self, placed: FileEntry) -> None:
        """Hold ``placed`` (an entry of the manifest being committed, its chunks placed)
        where it is the file remembered, instead of a second copy (as hashed, without
        their place)."""
        row = self._rows.get(placed.path)
        if row is None:
            return
        cached = self._entries[row]
        if cached is not None and cached is not placed and _same(cached, placed):
            self._entries[row] = placed


def _same(a: FileEntry, b: FileEntry) -> bool:
    """The same file: path, size, mode, mtime and content (wherever its chunks lie)."""
    if (a.path, a.size, a.mode, a.mtime_ns) != (b.path, b.size, b.mode, b.mtime_ns):
        return False
    x, y = a.chunks, b.chunks
    return len(x) == len(y) and all(
        p.sha256 == q.sha256 and p.size == q.size for p, q in zip(x, y, strict=True)
    )
