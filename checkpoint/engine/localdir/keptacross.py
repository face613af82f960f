"""Keep the local index's rows across the agent's own unlinks in the dir.

The freeze area holds hard links to the dir's files; removing them moves each inode's
ctime, which alone would void every row of the index (:mod:`.localindex`). Nothing else
writes to the dir then, so a row whose file changed in ctime only is written again with it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..config import DEFAULTS
from .indexfile import (
    INDEX_NAME,
    STAT_ROW,
    Row,
    boot_id,
    damaged,
    drop,
    index_path,
    not_racy,
    open_index,
    stat_bytes,
    sweep,
    unlink,
    why,
    write_rows,
)


@contextlib.contextmanager
def kept_across(directory: Path, boot_id_path: Path = DEFAULTS.boot_id_path) -> Iterator[None]:
    """Around the agent's own removal of hard links to the dir's files (the freeze area):
    unlinking a name moves the ctime of the inode, which alone would void every entry.

    A file that the index vouched for just before (its full stat matched) and whose stat
    just after differs in ctime only is recorded again with its new ctime; the rest of the
    index is dropped. Nothing else writes to the dir meanwhile: this runs before the job
    starts and after it has ended. The rows that held before wait in a database of their
    own beside the index (with each file's mode then), never in memory.
    """
    found = open_index(directory)
    if found is None:
        yield
        return
    db, head, written_ns = found
    if head[3] != boot_id(boot_id_path):
        db.close()
        yield
        return
    before = index_path(directory).with_name(f".{INDEX_NAME}.before.{os.getpid()}.tmp")
    held: sqlite3.Connection | None = None
    try:
        sweep(before.parent)
        held = sqlite3.connect(before, isolation_level=None)
        held.execute("PRAGMA journal_mode=OFF")
        held.execute("PRAGMA synchronous=OFF")
        held.execute("CREATE TABLE held(path BLOB NOT NULL, stat BLOB, chunks BLOB, mode INT)")
        held.execute("BEGIN")
        held.executemany("INSERT INTO held VALUES (?, ?, ?, ?)", _still(directory, db, written_ns))
        held.execute("COMMIT")
    except (OSError, sqlite3.Error) as exc:
        damaged(index_path(directory), f"cannot read it through: {why(exc)}")
        if held is not None:
            held.close()
        held = None
    finally:
        db.close()
    try:
        yield
    finally:
        if held is None:
            drop(directory, "its rows could not be checked")
        else:
            try:
                rows = _moved_ctime(directory, held.execute("SELECT * FROM held ORDER BY rowid"))
                write_rows(directory, head, rows)
            except (OSError, sqlite3.Error) as exc:
                damaged(index_path(directory), f"cannot rewrite it: {why(exc)}")
                drop(directory, "its entries no longer match")
            finally:
                held.close()
        unlink(before)


def _still(
    directory: Path, db: sqlite3.Connection, written_ns: int
) -> Iterator[tuple[object, ...]]:
    """The rows whose file has the recorded stat now (not racy), with its mode now."""
    for path, stat_row, chunks in db.execute("SELECT path, stat, chunks FROM files"):
        with contextlib.suppress(OSError, TypeError, ValueError):
            st = os.lstat(os.path.join(os.fsencode(directory), path))
            if stat.S_ISREG(st.st_mode) and stat_row == stat_bytes(st) and not_racy(st, written_ns):
                yield path, stat_row, chunks, st.st_mode


def _moved_ctime(directory: Path, held: Iterable[tuple[object, ...]]) -> Iterator[Row]:
    """The rows held before, their ctime the file's now, where nothing else moved."""
    for path, stat_row, chunks, mode in held:
        assert isinstance(path, bytes) and isinstance(stat_row, bytes) and isinstance(chunks, bytes)
        with contextlib.suppress(OSError):
            now = os.lstat(os.path.join(os.fsencode(directory), path))
            size, mtime_ns, ctime_ns, ino, dev = STAT_ROW.unpack(stat_row)
            if (now.st_mode, now.st_size, now.st_mtime_ns, now.st_ino, now.st_dev) == (
                mode,
                size,
                mtime_ns,
                ino,
                dev,
            ) and now.st_ctime_ns >= ctime_ns:
                yield path, stat_bytes(now), chunks
