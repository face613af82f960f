"""The local index: proof, by stat alone, that the checkpoint dir holds a checkpoint.

Written into ``.spot-agent/index.sqlite`` after every commit and every restore into the
dir; read by restore, so that a retry on the same host (a container restart, the same
instance) keeps the files it already has without reading them again.

As git's index does, it records each file's stat (size, mtime, ctime, inode, device) with
the chunks its bytes were hashed into, and trusts a file only while every one of them still
matches. What it records comes from the sync's stat cache (:class:`checkpoint.engine.localdir.stats.
StatCache`): stats taken when the bytes were hashed (or restored), never a later stat that
could belong to bytes written since. A file is trusted only when, besides:

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

**Paged, never whole in memory.** The index is a SQLite file of the standard library: it
is written row by row as the manifest's files are walked, and read by path as a restore
checks each file, :data:`RANGE_ROWS` rows in path order at a time (a directory's files
come together); 100,000 files take a few MiB of memory either way, not the whole index.
It is written atomically: a new database beside it (no journal, one transaction),
fsynced, then renamed over the old one, so a kill at any point leaves the old index or
the new one, whole. Layout::

    head(format, job_id, sequence, boot_id)      one row; format 2
    files(path BLOB PRIMARY KEY, stat BLOB, chunks BLOB) WITHOUT ROWID: one b-tree, by path
      path   = the name's bytes, as the filesystem has them (any byte but NUL)
      stat   = size, mtime_ns, ctime_ns (int64), inode, device (uint64), native order
      chunks = per chunk: size, offset (uint64), len(hash), len(pack) (uint8), then the
               hash's and the pack id's bytes (hex decoded; a hole has neither)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog

from checkpoint.protocol import RESERVED_DIR

from ..config import DEFAULTS
from ..format.manifest import MODE_BITS, Chunk, FileEntry, Manifest
from .stats import StatCache

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
#: rows a restore reads at once, in path order (a few hundred KiB)
RANGE_ROWS = 1024
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
        digest = bytes.fromhex(c.sha256)
        pack = b"" if c.pack is None else bytes.fromhex(c.pack)
        out += _CHUNK.pack(c.size, c.offset, len(digest), len(pack))
        out += digest
        out += pack
    return bytes(out)


def stat_bytes(st: os.stat_result) -> bytes:
    return STAT_ROW.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def write_index(
    directory: Path,
    manifest: Manifest,
    cache: StatCache,
    *,
    boot_id_path: Path = DEFAULTS.boot_id_path,
) -> int | None:
    """Record the files of ``manifest`` whose stat ``cache`` vouches for (same chunks).

    Returns how many files it vouches for, or None when no index was written (no boot id,
    or a local error: logged, never raised, the checkpoint itself is committed already).
    """
    boot = boot_id(boot_id_path)
    if boot is None:
        return None

    def rows() -> Iterator[Row]:
        for f in manifest.files:
            known = cache.vouched(f.path)
            # The cache holds the chunks as hashed (content); the manifest's carry their
            # place too (a pack and an offset), filled in once the uploads ended: compare
            # content, record places.
            if known is None or known[1] < 0 or not same_content(known[2], f.chunks):
                continue
            (size, mtime_ns, ctime_ns, ino), dev, _ = known
            row = STAT_ROW.pack(size, mtime_ns, ctime_ns, ino, dev), chunk_bytes(f.chunks)
            yield os.fsencode(f.path), *row

    head = (FORMAT, manifest.job_id, manifest.sequence, boot)
    try:
        return _write(directory, head, rows())
    except (OSError, sqlite3.Error) as exc:
        log.warning(
            "index.write_failed",
            path=str(index_path(directory)),
            error=_why(exc),
            action="the next restore into this dir reads every file to check it",
        )
        return None


def same_content(a: tuple[Chunk, ...], b: tuple[Chunk, ...]) -> bool:
    """The same bytes, wherever they are stored."""
    return len(a) == len(b) and all(
        x.sha256 == y.sha256 and x.size == y.size for x, y in zip(a, b, strict=True)
    )


def _write(directory: Path, head: Head, rows: Iterable[Row]) -> int:
    """A new database beside the index (``rows`` streamed into it in one transaction),
    fsynced, renamed over the index: a reader sees the old index or the new one, whole.
    Returns how many rows it holds."""
    final = index_path(directory)
    reserved = final.parent
    with contextlib.suppress(FileExistsError):
        os.mkdir(reserved, 0o700)
    if not stat.S_ISDIR(os.lstat(reserved).st_mode):  # never write through a job's symlink
        raise NotADirectoryError(f"{reserved} is not a directory")
    _sweep(reserved)
    tmp = reserved / f".{INDEX_NAME}.{os.getpid()}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    try:
        count = 0

        def counted() -> Iterator[Row]:
            nonlocal count
            for row in rows:
                count += 1
                yield row

        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=OFF")  # the rename is the commit, not a journal
            db.execute("PRAGMA synchronous=OFF")  # one fsync, below, once it is all written
            db.executescript(_SCHEMA)
            db.execute("BEGIN")
            db.execute("INSERT INTO head VALUES (?, ?, ?, ?)", head)
            db.executemany("INSERT INTO files VALUES (?, ?, ?)", counted())
            db.execute("COMMIT")
        finally:
            db.close()
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        _unlink(tmp)
        raise
    fd = os.open(reserved, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # the rename itself
    finally:
        os.close(fd)
    _unlink(reserved / OLD_INDEX_NAME)  # an older agent's: never read again
    return count


def _sweep(reserved: Path) -> None:
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
        _unlink(tmp)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


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
        found = _open(directory)
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
            and st.st_mtime_ns < self.written_ns
            and st.st_ctime_ns < self.written_ns
        ):
            return False
        try:
            row = self._row(os.fsencode(f.path))
        except (sqlite3.Error, ValueError) as exc:  # a damaged page, met half way
            _damaged(self._path, _why(exc))
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


def _not_racy(st: os.stat_result, written_ns: int) -> bool:
    return st.st_mtime_ns < written_ns and st.st_ctime_ns < written_ns


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
    found = _open(directory)
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
        _sweep(before.parent)
        held = sqlite3.connect(before, isolation_level=None)
        held.execute("PRAGMA journal_mode=OFF")
        held.execute("PRAGMA synchronous=OFF")
        held.execute("CREATE TABLE held(path BLOB NOT NULL, stat BLOB, chunks BLOB, mode INT)")
        held.execute("BEGIN")
        held.executemany("INSERT INTO held VALUES (?, ?, ?, ?)", _still(directory, db, written_ns))
        held.execute("COMMIT")
    except (OSError, sqlite3.Error) as exc:
        _damaged(index_path(directory), f"cannot read it through: {_why(exc)}")
        if held is not None:
            held.close()
        held = None
    finally:
        db.close()
    try:
        yield
    finally:
        if held is None:
            _drop(directory, "its rows could not be checked")
        else:
            try:
                rows = _moved_ctime(directory, held.execute("SELECT * FROM held ORDER BY rowid"))
                _write(directory, head, rows)
            except (OSError, sqlite3.Error) as exc:
                _damaged(index_path(directory), f"cannot rewrite it: {_why(exc)}")
                _drop(directory, "its entries no longer match")
            finally:
                held.close()
        _unlink(before)


def _still(
    directory: Path, db: sqlite3.Connection, written_ns: int
) -> Iterator[tuple[object, ...]]:
    """The rows whose file has the recorded stat now (not racy), with its mode now."""
    for path, stat_row, chunks in db.execute("SELECT path, stat, chunks FROM files"):
        with contextlib.suppress(OSError, TypeError, ValueError):
            st = os.lstat(os.path.join(os.fsencode(directory), path))
            if (
                stat.S_ISREG(st.st_mode)
                and stat_row == stat_bytes(st)
                and _not_racy(st, written_ns)
            ):
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


def _drop(directory: Path, why: str) -> None:
    """The index goes: its entries are never trusted again."""
    with contextlib.suppress(OSError):
        os.unlink(index_path(directory))
        log.info("index.dropped", path=str(index_path(directory)), why=why)


def _open(directory: Path) -> tuple[sqlite3.Connection, Head, int] | None:
    """(the open index, its head row, the file's mtime), or None (absent; damaged: warned)."""
    path = index_path(directory)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _damaged(path, _why(exc))
        return None
    if not stat.S_ISREG(st.st_mode):  # never opened through a link
        _damaged(path, "not a regular file")
        return None
    try:
        # read by whichever thread restores: reads only, one at a time
        uri = f"{path.absolute().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        _damaged(path, _why(exc))
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
        _damaged(path, _why(exc))
        return None
    return db, head, st.st_mtime_ns


def _untrusted(head: Head, manifest: Manifest, current: str | None) -> str | None:
    fmt, job_id, sequence, boot = head
    if fmt != FORMAT:
        return f"written by another version (format {fmt!r})"
    if job_id != manifest.job_id or sequence != manifest.sequence:
        return f"for job {job_id!r} checkpoint {sequence!r}, not this one"
    if current is None or boot != current:
        return "written before the last reboot: pages not flushed then may be lost"
    return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


def _damaged(path: Path, why: str) -> None:
    log.warning("index.damaged", path=str(path), error=why, action="ignored: reading every file")
