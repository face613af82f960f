"""The stat cache: rows in the walk's order, found by a cursor or a search, renewed by each
sync (checkpoint.engine.localdir.statcache)."""

from __future__ import annotations

import os
import random
import time

from checkpoint.engine.format.manifest import Chunk, FileEntry
from checkpoint.engine.localdir.statcache import StatCache

HOUR_AGO = time.time_ns() - 3600 * 10**9
STORED = {f"{i:064x}" for i in range(1000)}


def stat(ino: int, mtime_ns: int = HOUR_AGO, size: int = 10) -> os.stat_result:
    return os.stat_result(
        (0o100644, ino, 1, 1, 0, 0, size, 0, mtime_ns // 10**9, mtime_ns // 10**9),
        {"st_mtime_ns": mtime_ns, "st_ctime_ns": mtime_ns},
    )


def entry(path: str, n: int) -> FileEntry:
    return FileEntry(path, 10, 0o644, HOUR_AGO, (Chunk(f"{n:064x}", 10),))


# in the walk's order: sorted by name, level by level ("a/x" before "a.b")
PATHS = ["a", "a/x", "a/y/z", "a.b", "b", "b/c", "c"]


def filled(paths: list[str]) -> StatCache:
    cache = StatCache()
    cache.begin()
    for n, p in enumerate(paths):
        cache.remember(entry(p, n), stat(n + 1))
    cache.take()
    return cache


def test_every_file_found_in_order_out_of_order_and_again() -> None:
    cache = filled(PATHS)
    for _ in range(2):  # a second pass starts behind the cursor
        for n, p in enumerate(PATHS):
            assert cache.unchanged(p, stat(n + 1), STORED) == entry(p, n)
    shuffled = list(enumerate(PATHS))
    random.Random(7).shuffle(shuffled)
    for n, p in shuffled:
        assert cache.unchanged(p, stat(n + 1), STORED) == entry(p, n)
        assert cache.vouched(p) == ((10, HOUR_AGO, HOUR_AGO, n + 1), 1, entry(p, n).chunks)


def test_absent_moved_or_not_stored_is_not_vouched_for() -> None:
    cache = filled(PATHS[::2])  # every other file
    for n, p in enumerate(PATHS):
        found = cache.unchanged(p, stat(n // 2 + 1), STORED)
        assert (found is not None) == (n % 2 == 0), p
    assert cache.unchanged("a", stat(99), STORED) is None  # another inode
    assert cache.unchanged("a", stat(1, size=11), STORED) is None
    assert cache.unchanged("a", stat(1), set()) is None  # its chunk is not stored
    assert cache.unchanged("0", stat(1), STORED) is None  # before the first row
    assert cache.unchanged("d", stat(1), STORED) is None  # after the last


def test_a_sync_renews_the_rows_and_a_failed_one_leaves_them() -> None:
    cache = filled(PATHS)
    cache.begin()
    cache.remember(entry("b", 4), stat(5))  # the sync saw only "b"
    cache.drop()  # ...and failed: every row stays
    assert cache.unchanged("a", stat(1), STORED) is not None
    cache.begin()
    cache.remember(entry("b", 4), stat(5))
    cache.take()  # what the sync did not see is forgotten
    assert cache.unchanged("a", stat(1), STORED) is None
    assert cache.unchanged("b", stat(5), STORED) == entry("b", 4)


def test_racy_files_are_not_remembered_and_forget_their_row() -> None:
    cache = filled(PATHS)
    now = time.time_ns()
    cache.remember(entry("b", 4), stat(5, mtime_ns=now))  # outside a sync: into the rows
    assert cache.unchanged("b", stat(5), STORED) is None
    assert cache.unchanged("b", stat(5, mtime_ns=now), STORED) is None
    assert cache.unchanged("a.b", stat(4), STORED) is not None  # its neighbours stay
    cache.remember(entry("c", 6), stat(7, mtime_ns=now))  # the last row goes...
    cache.remember(entry("b/d", 8), stat(9))  # ...and what sorts before it comes last
    assert cache.unchanged("b/d", stat(9), STORED) == entry("b/d", 8)
    assert cache.unchanged("c", stat(7), STORED) is None


def test_out_of_order_remembers_are_put_in_place() -> None:
    cache = StatCache()
    for n, p in reversed(list(enumerate(PATHS))):  # outside a sync, as a restore may
        cache.remember(entry(p, n), stat(n + 1))
    cache.remember(entry("a/x", 9), stat(10))  # the same file again: replaced
    for n, p in enumerate(PATHS):
        want = entry("a/x", 9) if p == "a/x" else entry(p, n)
        assert cache.unchanged(p, stat(10 if p == "a/x" else n + 1), STORED) == want


def test_share_keeps_the_committed_entry_of_the_same_file() -> None:
    cache = filled(PATHS)
    placed = FileEntry("b", 10, 0o644, HOUR_AGO, (Chunk(f"{4:064x}", 10, "f" * 64, 0),))
    cache.share(placed)
    assert cache.unchanged("b", stat(5), STORED) is placed
    other = FileEntry("c", 10, 0o644, HOUR_AGO, (Chunk("e" * 64, 10, "f" * 64, 0),))
    cache.share(other)  # other bytes: not the file remembered
    assert cache.unchanged("c", stat(7), STORED) == entry("c", 6)


def test_changes_name_each_row_added_changed_moved_or_gone_since_the_mark() -> None:
    cache = filled(PATHS)
    cache.mark()
    cache.begin()  # a sync: "a" kept as it was, "b" read again, "c" gone, "d" new
    for n, p in enumerate(PATHS):
        if p == "b":
            cache.remember(entry(p, 40), stat(41))
        elif p != "c":
            cached = cache.unchanged(p, stat(n + 1), STORED)
            assert cached is not None
            cache.remember(cached, stat(n + 1), kept=True)
    cache.remember(entry("d", 50), stat(51))
    cache.take()
    assert cache.changes() == {"b", "c", "d"}
    placed = FileEntry("a", 10, 0o644, HOUR_AGO, (Chunk(f"{0:064x}", 10, "f" * 64, 0),))
    cache.share(placed)  # the same bytes, in a pack now: its row changes
    assert cache.changes() == {"a", "b", "c", "d"}
    cache.mark()
    assert cache.changes() == set()


def test_more_changes_than_a_quarter_of_the_rows_are_not_kept() -> None:
    paths = [f"f{i:05d}" for i in range(20_000)]
    cache = filled(paths)
    cache.mark()
    cache.begin()
    for n, p in enumerate(paths):  # every file read again: the index is written whole
        cache.remember(entry(p, n + 1), stat(n + 1))
    cache.take()
    assert cache.changes() is None
    cache.mark()
    assert cache.changes() == set()
