"""Stats held compactly: the scan's packed stats (:class:`FileStats`), a restore's stats of
the files it kept (:class:`StatMap`), and what of a stat tells a file changed
(:func:`stat_key`). The stat cache, which lets a sync skip a file whose stat has not moved
since it was hashed, is :mod:`.statcache`'s.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, MutableMapping

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
