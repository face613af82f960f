"""The local index's file: a SQLite database of the standard library, never whole in memory.

What it vouches for, and when, is :mod:`.localindex`'s. The file is written row by row as
the manifest's files are walked, and read by path as a restore checks each file, a range
of rows in path order at a time (a directory's files come together,
:data:`.localindex.RANGE_ROWS`); 100,000 files take a few MiB of memory either way, not
the whole index. It is written atomically: a new database beside it (no journal, one
transaction), fsynced, then renamed over the old one, so a kill at any point leaves the old
index or the new one, whole. After a commit only the rows that changed are written, the
same way, on a copy of the index (:func:`update_rows`). Layout::

    head(format, job_id, sequence, boot_id)      one row; format 2
    files(path BLOB PRIMARY KEY, stat BLOB, chunks BLOB) WITHOUT ROWID: one b-tree, by path
      path   = the name's bytes, as the filesystem has them (any byte but NUL)
      stat   = size, mtime_ns, ctime_ns (int64), inode, device (uint64), native order
      chunks = per chunk: size, offset (uint64), len(hash), len(pack) (uint8), then the
               hash's and the pack id's bytes (format.hashes.packed; a hole has neither)
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog

from checkpoint.protocol import RESERVED_DIR

from ..config import DEFAULTS
from ..format import hashes
from ..format.manifest import Chunk

log = structlog.get_logger("checkpoint")

INDEX_NAME = "index.sqlite"
#: what an older agent wrote (one JSON document): never read, removed when a new one is
OLD_INDEX_NAME = "index.json"
FORMAT = 2
STAT_ROW = struct.Struct("=qqqQQ")  # size, mtime_ns, ctime_ns, inode, device
_CHUNK = struct.Struct("=QQBB")  # size, offset, bytes of the hash, bytes of the pack id
_SCHEMA = """
CREATE TABLE head(format INTEGER NOT NULL, job_id TEXT NOT NULL, sequence INTEGER NOT NULL,
                  boot_id TEXT NOT NULL);
CREATE TABLE files(path BLOB PRIMARY KEY NOT NULL, stat BLOB NOT NULL, chunks BLOB NOT NULL)
    WITHOUT ROWID;
"""
Row = tuple[bytes, bytes, bytes]  # path (os.fsencode), stat, chunks
Head = tuple[int, str, int, str]  # format, job_id, sequence, boot_id


def index_path(directory: Path) -> Path:
    return directory / RESERVED_DIR / INDEX_NAME


def boot_id(path: Path = DEFAULTS.boot_id_path) -> str | None:
    """This boot's id, read from ``path``, or None where the kernel does not say (the index
    is then unused)."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def chunk_bytes(chunks: tuple[Chunk, ...]) -> bytes:
    """The chunks as a row stores them: equal bytes, equal chunks (places included)."""
    out = bytearray()
    for c in chunks:
        digest = hashes.packed(c.digest)  # a hole: b""
        pack = b"" if c.pack is None else hashes.packed(c.pack)
        out += _CHUNK.pack(c.size, c.offset, len(digest), len(pack))
        out += digest
        out += pack
    return bytes(out)


def not_racy(st: os.stat_result, written_ns: int) -> bool:
    """Is the file of ``st`` older than the index written at ``written_ns`` (the index
    file's mtime, the same clock and granularity)? A file not older may have been written
    again within one timestamp tick, unseen by its stat (git's racy case)."""
    return st.st_mtime_ns < written_ns and st.st_ctime_ns < written_ns


def stat_bytes(st: os.stat_result) -> bytes:
    return STAT_ROW.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def write_rows(directory: Path, head: Head, rows: Iterable[Row]) -> int:
    """A new database beside the index (``rows`` streamed into it in one transaction),
    fsynced, renamed over the index: a reader sees the old index or the new one, whole.
    Returns how many rows it holds."""
    final, tmp = _beside(directory)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    try:
        count = 0

        def counted() -> Iterator[Row]:
            nonlocal count
            for row in rows:
                count += 1
                yield row

        db = _connect(tmp)
        try:
            db.executescript(_SCHEMA)
            db.execute("BEGIN")
            db.execute("INSERT INTO head VALUES (?, ?, ?, ?)", head)
            db.executemany("INSERT INTO files VALUES (?, ?, ?)", counted())
            db.execute("COMMIT")
        finally:
            db.close()
        _install(tmp, final)
    except BaseException:
        unlink(tmp)
        raise
    return count


def update_rows(
    directory: Path, head: Head, expect: Head, rows: Iterable[Row], gone: Iterable[bytes]
) -> bool:
    """The index of ``expect`` made the index of ``head``: ``rows`` written over theirs,
    the rows of the paths ``gone`` deleted. Done on a copy of it (the file's bytes, copied
    by the kernel: about 170 MB at a million rows) renamed over it, so a reader still sees
    the old index or the new one, whole, and a kill at any point leaves one of them.

    False, with nothing changed, when the index there is not ``expect``'s (absent, written
    for another checkpoint, or by someone else since): the caller writes it whole.
    """
    final, tmp = _beside(directory)
    try:
        src = os.open(final, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            return False
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            _copy(src, dst)
        finally:
            os.close(dst)
    except BaseException:
        unlink(tmp)
        raise
    finally:
        os.close(src)
    try:
        db = _connect(tmp)
        try:
            found = db.execute("SELECT format, job_id, sequence, boot_id FROM head").fetchall()
            if found != [expect]:
                unlink(tmp)
                return False
            db.execute("BEGIN")
            db.execute("UPDATE head SET sequence = ?", (head[2],))
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", rows)
            db.executemany("DELETE FROM files WHERE path = ?", ((p,) for p in gone))
            db.execute("COMMIT")
        finally:
            db.close()
        _install(tmp, final)
    except BaseException:
        unlink(tmp)
        raise
    return True


def _beside(directory: Path) -> tuple[Path, Path]:
    """The index's path and the one of a new database beside it (``.spot-agent/`` made if
    need be, a killed writer's leftovers swept)."""
    final = index_path(directory)
    reserved = final.parent
    with contextlib.suppress(FileExistsError):
        os.mkdir(reserved, 0o700)
    if not stat.S_ISDIR(os.lstat(reserved).st_mode):  # never write through a job's symlink
        raise NotADirectoryError(f"{reserved} is not a directory")
    sweep(reserved)
    return final, reserved / f".{INDEX_NAME}.{os.getpid()}.tmp"


def _connect(tmp: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")  # the rename is the commit, not a journal
    db.execute("PRAGMA synchronous=OFF")  # one fsync, in _install, once it is all written
    return db


def _copy(src: int, dst: int) -> None:
    """All of ``src`` into ``dst``, in the kernel (a reflink where the filesystem has them)."""
    while True:
        try:
            n = os.copy_file_range(src, dst, 1 << 30)
        except OSError as exc:  # EXDEV, ENOSYS, EINVAL: not on this filesystem
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = os.sendfile(dst, src, None, 1 << 30)
        if n == 0:
            return


def _install(tmp: Path, final: Path) -> None:
    """The new database fsynced and renamed over the index; the rename fsynced."""
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # the rename itself
    finally:
        os.close(fd)
    unlink(final.parent / OLD_INDEX_NAME)  # an older agent's: never read again


def sweep(reserved: Path) -> None:
    """Remove the temporary databases that a writer killed half way left: those of a
    process that is gone, and this process's own."""
    for tmp in reserved.glob(f".{INDEX_NAME}.*.tmp"):
        pid = tmp.name[: -len(".tmp")].rpartition(".")[2]
        if not pid.isdigit():
            continue
        if int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # its writer may still be at work
            except ProcessLookupError:
                pass
            except OSError:
                continue
        unlink(tmp)


def unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def drop(directory: Path, why: str) -> None:
    """The index goes: its entries are never trusted again."""
    with contextlib.suppress(OSError):
        os.unlink(index_path(directory))
        log.info("index.dropped", path=str(index_path(directory)), why=why)


def open_index(directory: Path) -> tuple[sqlite3.Connection, Head, int] | None:
    """(the open index, its head row, the file's mtime), or None (absent; damaged: warned)."""
    path = index_path(directory)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        damaged(path, why(exc))
        return None
    if not stat.S_ISREG(st.st_mode):  # never opened through a link
        damaged(path, "not a regular file")
        return None
    try:
        # read by whichever thread restores: reads only, one at a time
        uri = f"{path.absolute().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        damaged(path, why(exc))
        return None
    try:
        heads = db.execute("SELECT format, job_id, sequence, boot_id FROM head").fetchall()
        db.execute("SELECT path, stat, chunks FROM files LIMIT 1").fetchall()
        if len(heads) != 1:
            raise ValueError(f"{len(heads)} head rows, not 1")
        fmt, job_id, sequence, boot = heads[0]
        if not (type(fmt) is int and type(sequence) is int):
            raise ValueError(f"head row {heads[0]!r}")
        head = (fmt, str(job_id), sequence, str(boot))
    except (sqlite3.Error, ValueError) as exc:
        db.close()
        damaged(path, why(exc))
        return None
    return db, head, st.st_mtime_ns


def why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


def damaged(path: Path, why: str) -> None:
    log.warning("index.damaged", path=str(path), error=why, action="ignored: reading every file")
