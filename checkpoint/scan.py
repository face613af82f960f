"""Walk a checkpoint dir, hash its files into chunks, and remember what was hashed.

Pure local work: nothing here talks to a store. :func:`scan` lists what a checkpoint
would hold; :func:`hash_file` splits one file into content-addressed chunks and hands
each to a callback (the uploader); :class:`StatCache` lets the next sync skip files whose
stat has not changed since they were hashed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CheckpointError, ManifestError
from .manifest import RESERVED_DIR, TEMP_SUFFIX, Chunk, FileEntry, LinkEntry, check_link_target

#: A file whose mtime is this recent is hashed again next time even if it looks unchanged:
#: a second write within the filesystem's timestamp granularity would otherwise be missed.
RACY_SECONDS = 2.0

StatKey = tuple[int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    # ctime too: `cp -p`, `touch -r` or os.utime can give rewritten bytes their old mtime.
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass
class Scan:
    files: list[tuple[str, os.stat_result]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    links: list[LinkEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan(root: Path) -> Scan:
    """Regular files, dirs and safe symlinks below root, in a stable order."""
    out = Scan()

    def walk(dirpath: Path, rel: str) -> None:
        try:
            entries = sorted(os.scandir(dirpath), key=lambda e: e.name)
        except FileNotFoundError:
            return
        except OSError as exc:  # not skipped: a checkpoint without it would lose it quietly
            raise CheckpointError(f"cannot read directory {dirpath}: {exc.strerror}") from exc
        for e in entries:
            r = f"{rel}{e.name}"
            if not rel and e.name == RESERVED_DIR:
                continue
            if e.name.endswith(TEMP_SUFFIX):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(e.path)
                try:
                    out.links.append(LinkEntry(r, check_link_target(target)))
                except ManifestError as exc:
                    out.skipped.append((r, f"symlink not checkpointed: {exc}"))
            elif stat.S_ISDIR(st.st_mode):
                out.dirs.append(r)
                walk(Path(e.path), r + "/")
            elif stat.S_ISREG(st.st_mode):
                out.files.append((r, st))
            else:
                out.skipped.append((r, "not a regular file, directory or symlink"))

    walk(root, "")
    return out


def hash_file(
    path: Path, chunk_size: int, put: Callable[[Chunk, bytes], None]
) -> tuple[tuple[Chunk, ...], os.stat_result]:
    """The file's chunks, each handed to ``put`` as it is read, and its stat after reading."""
    chunks = []
    with open(path, "rb", buffering=0) as fh:
        while True:
            data = fh.read(chunk_size)
            if not data:
                break
            chunk = Chunk(hashlib.sha256(data).hexdigest(), len(data))
            put(chunk, data)
            chunks.append(chunk)
        after = os.fstat(fh.fileno())
    return tuple(chunks), after


def file_matches(path: Path, entry: FileEntry) -> bool:
    """Does the file at ``path`` hold exactly the bytes ``entry`` describes?"""
    try:
        with open(path, "rb", buffering=0) as fh:
            for c in entry.chunks:
                data = fh.read(c.size)
                if len(data) != c.size or hashlib.sha256(data).hexdigest() != c.sha256:
                    return False
            return not fh.read(1)
    except OSError:
        return False


@dataclass
class _CacheEntry:
    key: StatKey  # any change means "read again"
    chunks: tuple[Chunk, ...]


class StatCache:
    """Chunks of files hashed before, trusted while size, mtime, ctime and inode match."""

    def __init__(self) -> None:
        self._entries: dict[str, _CacheEntry] = {}

    def remember(self, rel: str, st: os.stat_result, chunks: tuple[Chunk, ...]) -> None:
        if time.time_ns() - st.st_mtime_ns > RACY_SECONDS * 1e9:
            self._entries[rel] = _CacheEntry(stat_key(st), chunks)
        else:
            self._entries.pop(rel, None)

    def unchanged(
        self, rel: str, st: os.stat_result, present: set[str]
    ) -> tuple[Chunk, ...] | None:
        """The chunks of a file that has not changed since they were hashed and uploaded."""
        cached = self._entries.get(rel)
        if cached is None or not all(c.sha256 in present for c in cached.chunks):
            return None
        if cached.key != stat_key(st):
            return None
        return cached.chunks
