"""The stat cache: which files a sync may take as they were, on their stat alone.

A file whose size, mtime, ctime and inode have not moved since its bytes were hashed (or
restored) is taken as its remembered entry, without a read. The rows are kept in the
walk's order (``path.split("/")``, :mod:`.walk`), which is also the manifest's: an entry
and its stat packed in 40 bytes of one shared array, and no map from path to row. Every
reader of the cache (a sync's count of bytes to read, its reading, the local index written
after a commit) asks in that same order, so a lookup is a step of a cursor over the rows
(a binary search when it is asked out of order): about 50 bytes a file, against ~120 for
a dict from path to row.

Each sync remembers its files into new rows (:meth:`StatCache.begin`), in the order it
reads them, and takes them (:meth:`StatCache.take`) once every file is read: a file the
sync did not see (deleted, skipped) is forgotten with it. A file written in the last
:data:`.stats.RACY_SECONDS` is not remembered: a second write within the filesystem's timestamp
granularity could otherwise be missed.
It also keeps the paths whose row changed since the last :meth:`StatCache.mark` (added,
changed, forgotten): the local index, written from these rows after a commit, rewrites only
those (:func:`.localindex.write_index`), so a commit that changed one file of a million
costs one row, not a million.
"""

from __future__ import annotations

import os
import struct
import time
from bisect import bisect_left
from collections.abc import Container, Iterable, Iterator

from ..format.manifest import Chunk, FileEntry
from .stats import RACY_SECONDS, StatKey, stat_key

#: rows a lookup walks forward from the cursor before it searches instead
_STEPS = 8

#: changed paths kept at least, whatever the number of rows
_MIN_TRACKED = 4096

#: a row's stat, packed: size, mtime, ctime, inode (the key), device
_KEY = struct.Struct("=qqqQQ")


def _order(path: str) -> list[str]:
    return path.split("/")


def _entry_order(e: FileEntry) -> list[str]:
    return e.path.split("/")


class _Rows:
    """Entries in the walk's order and their stats, row ``i`` at ``[i * 40, (i + 1) * 40)``."""

    __slots__ = ("_last", "entries", "stats")

    def __init__(self) -> None:
        self.entries: list[FileEntry] = []
        self.stats = bytearray()
        self._last: list[str] = []  # the order of the last row's path

    def add(self, entry: FileEntry, st: os.stat_result) -> None:
        """Append, or insert where the walk's order puts it (a caller out of order)."""
        entries, key = self.entries, _order(entry.path)
        if not entries or self._last < key:
            entries.append(entry)
            self.stats += _KEY.pack(*stat_key(st), st.st_dev)
            self._last = key
            return
        i = bisect_left(entries, key, key=_entry_order)
        if i < len(entries) and entries[i].path == entry.path:
            entries[i] = entry
        else:
            entries.insert(i, entry)
            self.stats[i * _KEY.size : i * _KEY.size] = bytes(_KEY.size)
        _KEY.pack_into(self.stats, i * _KEY.size, *stat_key(st), st.st_dev)

    def remove(self, i: int) -> None:
        del self.entries[i]
        del self.stats[i * _KEY.size : (i + 1) * _KEY.size]
        if i == len(self.entries):
            self._last = _order(self.entries[-1].path) if self.entries else []


class StatCache:
    """Entries of files hashed before, trusted while size, mtime, ctime and inode match.

    A row's entry is, after a commit, the very entry of the committed manifest (see
    :meth:`share`): a sync takes it as it is for a file whose stat has not moved, with no
    second entry, path or chunks.
    """

    __slots__ = ("_again", "_changed", "_cursor", "_kept", "_next", "_rows")

    def __init__(self) -> None:
        self._rows = _Rows()
        self._next: _Rows | None = None  # the rows a sync is remembering, until it takes them
        #: where the next lookup starts: a hint, checked every time (a sync and a
        #: ``pending_bytes`` walk on another thread may both move it)
        self._cursor = 0
        #: paths whose row may differ from what it was at the last :meth:`mark`; None: too
        #: many to keep (more than a quarter of the rows), or not known
        self._changed: set[str] | None = set()
        self._kept = 0  # rows of the sync in progress carried over exactly as they were
        self._again: set[str] = set()  # paths of old rows the sync remembers changed

    def begin(self) -> None:
        """A sync starts: what :meth:`remember` is told from now on makes new rows."""
        self._next = _Rows()
        self._kept = 0
        self._again = set()

    def take(self) -> None:
        """The sync read every file: its rows replace the old ones."""
        if self._next is None:
            return
        old, self._rows, self._next = self._rows, self._next, None
        gone = len(old.entries) - self._kept - len(self._again)
        if gone < 0:  # told twice of a row: the count no longer says what went
            self._changed = None
        elif gone and self._changed is not None:  # files deleted, or left out: which?
            self._note_all(_missing(old.entries, self._rows.entries))
        self._again = set()

    def changes(self) -> set[str] | None:
        """The paths whose row may have changed since the last :meth:`mark` (None: not
        known, every row may have)."""
        return self._changed

    def mark(self) -> None:
        """What the rows hold now is recorded (the local index was written from them)."""
        self._changed = set()

    def drop(self) -> None:
        """The sync stopped before it read every file: the old rows stay."""
        self._next = None

    def remember(self, entry: FileEntry, st: os.stat_result, *, kept: bool = False) -> None:
        """``entry`` holds the bytes the file had at ``st`` (its stat when they were hashed
        or restored). Outside a sync (:meth:`begin`), into the rows in use. ``kept``: this
        is the very row the cache holds (:meth:`unchanged` gave ``entry`` for ``st``)."""
        rows = self._next if self._next is not None else self._rows
        if time.time_ns() - st.st_mtime_ns > RACY_SECONDS * 1e9:
            rows.add(entry, st)
            if kept and rows is not self._rows:
                self._kept += 1
                return
        elif rows is self._rows:  # new rows forget it by leaving it out
            found = self._find(entry.path)
            if found is not None:
                rows.remove(found[1])
        if rows is not self._rows and self._find(entry.path) is not None:
            self._again.add(entry.path)
        self._note_all((entry.path,))

    def _note_all(self, paths: Iterable[str]) -> None:
        changed = self._changed
        if changed is None:
            return
        limit = max(_MIN_TRACKED, len(self._rows.entries) // 4)
        for path in paths:
            changed.add(path)
            if len(changed) > limit:  # a whole rewrite costs less than this many rows
                self._changed = None
                return

    def _find(self, rel: str) -> tuple[_Rows, int] | None:
        """The rows in use and the row of ``rel``, or None."""
        rows = self._rows
        if not rows.entries:  # the first sync: nothing to look for
            return None
        entries, n, key = rows.entries, len(rows.entries), _order(rel)
        i = min(self._cursor, n)
        if i > 0 and _order(entries[i - 1].path) >= key:  # behind the cursor: search
            i = bisect_left(entries, key, hi=i, key=_entry_order)
        else:  # in the walk's order: at the cursor or a few rows on
            for _ in range(_STEPS):
                if i >= n or _order(entries[i].path) >= key:
                    break
                i += 1
            else:
                i = bisect_left(entries, key, lo=i, key=_entry_order)
        found = i < n and entries[i].path == rel
        self._cursor = i + 1 if found else i
        return (rows, i) if found else None

    def unchanged(self, rel: str, st: os.stat_result, present: Container[str]) -> FileEntry | None:
        """The entry of a file that has not changed since its chunks were hashed and
        uploaded (its mode may have: the caller compares)."""
        found = self._find(rel)
        if found is None:
            return None
        rows, i = found
        entry = rows.entries[i]
        if not all(c.is_hole or c.digest in present for c in entry.chunks):
            return None
        if _KEY.unpack_from(rows.stats, i * _KEY.size)[:4] != stat_key(st):
            return None
        return entry

    def vouched(self, rel: str) -> tuple[StatKey, int, tuple[Chunk, ...]] | None:
        """(stat key, device, chunks) remembered for ``rel``: what the local index records."""
        found = self._find(rel)
        if found is None:
            return None
        rows, i = found
        size, mtime_ns, ctime_ns, ino, dev = _KEY.unpack_from(rows.stats, i * _KEY.size)
        return (size, mtime_ns, ctime_ns, ino), dev, rows.entries[i].chunks

    def share(self, placed: FileEntry) -> None:
        """Hold ``placed`` (an entry of the manifest being committed, its chunks placed)
        where it is the file remembered, instead of a second copy (as hashed, without
        their place)."""
        found = self._find(placed.path)
        if found is None:
            return
        rows, i = found
        cached = rows.entries[i]
        if cached is not placed and _same(cached, placed):
            rows.entries[i] = placed
            if cached.chunks != placed.chunks:  # the same bytes, stored elsewhere now
                self._note_all((placed.path,))


def _same(a: FileEntry, b: FileEntry) -> bool:
    """The same file: path, size, mode, mtime and content (wherever its chunks lie)."""
    if (a.path, a.size, a.mode, a.mtime_ns) != (b.path, b.size, b.mode, b.mtime_ns):
        return False
    x, y = a.chunks, b.chunks
    return len(x) == len(y) and all(
        p.digest == q.digest and p.size == q.size for p, q in zip(x, y, strict=True)
    )


def _missing(old: list[FileEntry], new: list[FileEntry]) -> Iterator[str]:
    """Paths of ``old`` that ``new`` lacks, both in the walk's order: one merge, no set."""
    j, n = 0, len(new)
    for e in old:
        while j < n and new[j].path != e.path and _entry_order(new[j]) < _entry_order(e):
            j += 1
        if j < n and new[j].path == e.path:
            j += 1
        else:
            yield e.path
