"""The local index: proof, by stat alone, that the checkpoint dir holds a checkpoint.

Written into ``.spot-agent/index.json`` after every commit and every restore into the
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

Anything unexpected (no index, another boot, garbage) means "read the file", never an
error. Format, one compact JSON document (one ``json.loads`` of the whole file loads
100,000 files, 16 MB, in 0.33 s on the shared 2-core test machine; JSON lines took 0.50 s)::

    {"format": 1, "job_id": ..., "sequence": n, "boot_id": "...",
     "chunk_fields": ["sha256", "size", ...],   # Chunk's fields, in order
     "files": [[path, size, mtime_ns, ctime_ns, ino, dev, [[chunk fields...], ...]], ...]}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import operator
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import structlog

from checkpoint._fsutil import write_atomic
from checkpoint.protocol import RESERVED_DIR

from ..config import DEFAULTS
from ..format.manifest import MAX_MANIFEST_BYTES, MODE_BITS, Chunk, FileEntry, Manifest
from .stats import StatCache

log = structlog.get_logger("checkpoint")

INDEX_NAME = "index.json"
FORMAT = 1
#: an index is about the size of the manifest; more than this is not one we wrote
MAX_INDEX_BYTES = 4 * MAX_MANIFEST_BYTES
_CHUNK_FIELDS = [f.name for f in dataclasses.fields(Chunk)]
_chunk_row = operator.attrgetter(*_CHUNK_FIELDS)


def index_path(directory: Path) -> Path:
    return directory / RESERVED_DIR / INDEX_NAME


def boot_id(path: Path = DEFAULTS.boot_id_path) -> str | None:
    """This boot's id, read from ``path``, or None where the kernel does not say (the index
    is then unused)."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _chunk_rows(chunks: tuple[Chunk, ...]) -> list[list[Any]]:
    return [list(_chunk_row(c)) for c in chunks]


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
    head = {
        "format": FORMAT,
        "job_id": manifest.job_id,
        "sequence": manifest.sequence,
        "boot_id": boot,
        "chunk_fields": _CHUNK_FIELDS,
    }
    vouched = [0]

    def pieces() -> Iterator[bytes]:
        """The document, written as it is made: a row per file, never the whole in memory
        (100,000 files held 50 MB of rows and text at once)."""
        yield _dumps(head)[:-1] + b',"files":['
        out: list[str] = []
        held = 0
        for f in manifest.files:
            known = cache.vouched(f.path)
            # The cache holds the chunks as hashed (content); the manifest's carry their
            # place too (a pack and an offset), filled in once the uploads ended: compare
            # content, record places.
            if known is None or known[1] < 0 or not same_content(known[2], f.chunks):
                continue
            (size, mtime_ns, ctime_ns, ino), dev, _ = known
            row = [f.path, size, mtime_ns, ctime_ns, ino, dev, _chunk_rows(f.chunks)]
            text = json.dumps(row, ensure_ascii=True, separators=(",", ":"))
            out.append(text if not vouched[0] else "," + text)
            vouched[0] += 1
            held += len(text)
            if held >= 1 << 20:
                yield "".join(out).encode("ascii")
                out, held = [], 0
        out.append("]}")
        yield "".join(out).encode("ascii")

    try:
        _write_atomic(index_path(directory), pieces())
    except OSError as exc:
        log.warning(
            "index.write_failed",
            path=str(index_path(directory)),
            error=exc.strerror or str(exc),
            action="the next restore into this dir reads every file to check it",
        )
        return None
    return vouched[0]


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def same_content(a: tuple[Chunk, ...], b: tuple[Chunk, ...]) -> bool:
    """The same bytes, wherever they are stored."""
    return len(a) == len(b) and all(
        x.sha256 == y.sha256 and x.size == y.size for x, y in zip(a, b, strict=True)
    )


def _write_atomic(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Temp file, fsync, rename: a reader sees the old index or the new one, whole."""
    reserved = path.parent
    with contextlib.suppress(FileExistsError):
        os.mkdir(reserved, 0o700)
    if not stat.S_ISDIR(os.lstat(reserved).st_mode):  # never write through a job's symlink
        raise NotADirectoryError(f"{reserved} is not a directory")
    write_atomic(path, data, fsync=True)


class LocalIndex:
    """A loaded index that holds for one manifest: :meth:`vouches` file by file."""

    def __init__(self, rows: dict[str, list[Any]], written_ns: int) -> None:
        self._rows = rows
        self.written_ns = written_ns  # the index file's mtime: files not older are racy

    def __len__(self) -> int:
        return len(self._rows)

    @classmethod
    def load(
        cls, directory: Path, manifest: Manifest, *, boot_id_path: Path = DEFAULTS.boot_id_path
    ) -> LocalIndex | None:
        """The dir's index if it may vouch for files of ``manifest``; None otherwise
        (absent; damaged: warned; another boot, job or checkpoint: logged)."""
        found = _read(directory)
        if found is None:
            return None
        doc, rows, written_ns = found
        why = _untrusted(doc, manifest, boot_id(boot_id_path))
        if why is not None:
            path = str(index_path(directory))
            log.info("index.not_trusted", path=path, why=why, action="reading every file")
            return None
        return cls(rows, written_ns)

    def vouches(self, f: FileEntry, st: os.stat_result) -> bool:
        """Does ``st`` (an lstat of ``f.path``) prove the file holds ``f``'s bytes?"""
        row = self._rows.get(f.path)
        return (
            row is not None
            and st.st_mtime_ns == f.mtime_ns  # the cheap refusals first: 20,000 files a go
            and st.st_size == f.size
            and _same_stat(row, st, self.written_ns)
            and st.st_mode & MODE_BITS == f.mode
            and row[6] == _chunk_rows(f.chunks)
        )


def _same_stat(row: list[Any], st: os.stat_result, written_ns: int) -> bool:
    """The row's stat is ``st``'s, and not racy against an index written at ``written_ns``."""
    return (
        len(row) == 7
        and row[3] == st.st_ctime_ns
        and row[4] == st.st_ino
        and row[2] == st.st_mtime_ns
        and row[1] == st.st_size
        and row[5] == st.st_dev
        and stat.S_ISREG(st.st_mode)
        and st.st_mtime_ns < written_ns
        and st.st_ctime_ns < written_ns
    )


@contextlib.contextmanager
def kept_across(directory: Path, boot_id_path: Path = DEFAULTS.boot_id_path) -> Iterator[None]:
    """Around the agent's own removal of hard links to the dir's files (the freeze area):
    unlinking a name moves the ctime of the inode, which alone would void every entry.

    A file that the index vouched for just before (its full stat matched) and whose stat
    just after differs in ctime only is recorded again with its new ctime; the rest of the
    index is dropped. Nothing else writes to the dir meanwhile: this runs before the job
    starts and after it has ended.
    """
    found = _read(directory)
    if found is None or found[0].get("boot_id") != boot_id(boot_id_path):
        yield
        return
    doc, rows, written_ns = found
    before: dict[str, os.stat_result] = {}
    for path, row in rows.items():
        with contextlib.suppress(OSError, TypeError, ValueError):
            st = os.lstat(directory / path)
            if _same_stat(row, st, written_ns):
                before[path] = st
    yield
    kept = []
    for path, st in before.items():
        with contextlib.suppress(OSError):
            now = os.lstat(directory / path)
            if _stat_but_ctime(now) == _stat_but_ctime(st) and now.st_ctime_ns >= st.st_ctime_ns:
                kept.append([*rows[path][:3], now.st_ctime_ns, *rows[path][4:]])
    doc["files"] = kept
    try:
        _write_atomic(index_path(directory), _dumps(doc))
    except OSError as exc:
        _damaged(index_path(directory), f"cannot rewrite it: {exc.strerror or exc}")
        with contextlib.suppress(OSError):
            os.unlink(index_path(directory))  # its entries no longer match: never trusted


def _stat_but_ctime(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


def _read(directory: Path) -> tuple[dict[str, Any], dict[str, list[Any]], int] | None:
    """(document, rows by path, the file's mtime), or None (absent; damaged: warned)."""
    path = index_path(directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _damaged(path, exc.strerror or str(exc))
        return None
    with open(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_INDEX_BYTES:
            _damaged(path, f"not a regular file of at most {MAX_INDEX_BYTES} bytes")
            return None
        data = fh.read(MAX_INDEX_BYTES + 1)
    try:
        doc = json.loads(data)
        rows = {row[0]: row for row in doc["files"]}
        _ = (doc["format"], doc["job_id"], doc["sequence"], doc["boot_id"], doc["chunk_fields"])
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        _damaged(path, f"{type(exc).__name__}: {exc}")
        return None
    return doc, rows, st.st_mtime_ns


def _untrusted(doc: dict[str, Any], manifest: Manifest, current: str | None) -> str | None:
    fmt, fields = doc["format"], doc["chunk_fields"]
    if fmt != FORMAT or fields != _CHUNK_FIELDS:
        return f"written by another version (format {fmt!r}, chunk fields {fields!r})"
    if doc["job_id"] != manifest.job_id or doc["sequence"] != manifest.sequence:
        return f"for job {doc['job_id']!r} checkpoint {doc['sequence']!r}, not this one"
    if current is None or doc["boot_id"] != current:
        return "written before the last reboot: pages not flushed then may be lost"
    return None


def _damaged(path: Path, why: str) -> None:
    log.warning("index.damaged", path=str(path), error=why, action="ignored: reading every file")
