"""Walk a checkpoint dir and hash its files into chunks.

Pure local work: nothing here talks to a store. :func:`scan` lists what a checkpoint
would hold; :func:`hash_file` splits one file into content-addressed chunks (named by
:mod:`..format.hashes`) and hands
each to a callback (the uploader); :mod:`.stats` holds what a sync remembers of their
stats.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from checkpoint.errors import CheckpointError, ManifestError

from ..config import DEFAULTS
from ..format import hashes
from ..format.manifest import (
    HOLE,
    MODE_BITS,
    Chunk,
    DirEntry,
    FileEntry,
    HardLinkEntry,
    LinkEntry,
    check_mtime,
    check_relpath,
)
from .stats import FileStats
from .walk import Kind, walk


class NotRegularFile(CheckpointError):
    """A path the scan saw as a regular file is something else now (a FIFO, a device)."""


@dataclass
class Scan:
    files: FileStats = field(default_factory=FileStats)
    dirs: list[DirEntry] = field(default_factory=list)
    links: list[LinkEntry] = field(default_factory=list)
    hardlinks: list[HardLinkEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan(root: Path) -> Scan:
    """Regular files, dirs and safe symlinks below root, in the walk's order (:mod:`.walk`).

    Every name passes the manifest's own checks (:func:`check_relpath`...) there, so a sync
    never records what a restore would refuse; what fails them is skipped with its reason.
    A file with several names in the tree is listed once; its other names are hard links.
    """
    out = Scan()
    inodes: dict[tuple[int, int], str] = {}
    for e in walk(root):
        if e.why:
            out.skipped.append((e.rel, e.why))
            continue
        st = e.st
        assert st is not None  # the walk stats
        if e.kind is Kind.LINK:
            out.links.append(LinkEntry(e.rel, e.target))
        elif e.kind is Kind.DIR:
            out.dirs.append(DirEntry(e.rel, st.st_mode & MODE_BITS))
        elif e.kind is Kind.FILE:
            r = e.rel
            first = inodes.setdefault((st.st_dev, st.st_ino), r) if st.st_nlink > 1 else r
            if first == r:
                out.files.append((r, st))
            else:
                out.hardlinks.append(HardLinkEntry(r, first))
    return out


def hash_file(
    path: Path,
    chunk_size: int,
    put: Callable[[Chunk, bytes], None],
    identify: hashes.Identify = hashes.new_id,
) -> tuple[tuple[Chunk, ...], os.stat_result]:
    """The file's chunks, each data chunk handed to ``put`` as it is read, and its stat.
    Each chunk is named by ``identify`` (new data: BLAKE3; a repack names them as before).

    Holes (found with SEEK_DATA/SEEK_HOLE) and all-zero chunks become hole chunks: never
    read twice, never uploaded, restored as holes. Opened non-blocking and checked with
    fstat: a FIFO swapped in after the scan is refused, not waited on forever.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path} is no longer a regular file")
        chunks: list[Chunk] = []
        for start, end, is_data in _extents(fd, st.st_size):
            if not is_data:
                _add_hole(chunks, end - start)
                continue
            pos = start
            while pos < end:
                data = os.pread(fd, min(chunk_size, end - pos), pos)
                if not data:
                    break  # truncated while we read: the stat check after says so
                pos += len(data)
                if _all_zero(data):
                    _add_hole(chunks, len(data))
                    continue
                chunk = Chunk(identify(data), len(data))
                put(chunk, data)
                chunks.append(chunk)
        return tuple(chunks), os.fstat(fd)
    finally:
        os.close(fd)


def _extents(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_data) runs covering [0, size); all data where holes are unknown."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here on
                data = size
            else:  # no SEEK_DATA on this filesystem: read it all
                yield pos, size, True
                return
        data = min(data, size)
        if data > pos:
            yield pos, data, False
        if data >= size:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        yield data, hole, True
        pos = hole


def _add_hole(chunks: list[Chunk], size: int) -> None:
    if chunks and chunks[-1].is_hole:
        chunks[-1] = Chunk(HOLE, chunks[-1].size + size)
    else:
        chunks.append(Chunk(HOLE, size))


def _all_zero(data: bytes) -> bool:
    # A look at the head first: data that is not zero fails there at once.
    head = data[:4096]
    return head.count(0) == len(head) and data.count(0) == len(data)


def file_matches(path: Path, entry: FileEntry, *, read_size: int = DEFAULTS.read_size) -> bool:
    """Does the file at ``path`` hold exactly the bytes ``entry`` describes? (Its holes are
    read ``read_size`` bytes at a time.)"""
    try:  # never blocks on a FIFO swapped in since the lstat, never follows a link
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb", buffering=0) as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            for c in entry.chunks:
                if c.is_hole:
                    if not _zeros_ahead(fh, c.size, read_size):
                        return False
                    continue
                data = fh.read(c.size)
                if len(data) != c.size or not hashes.matches(c.digest, data):
                    return False
            return not fh.read(1)
    except OSError:
        return False


def _zeros_ahead(fh: BinaryIO, size: int, block: int) -> bool:
    while size:
        data = fh.read(min(size, block))
        if not data or not _all_zero(data):
            return False
        size -= len(data)
    return True


class FrozenState(Protocol):
    """What :func:`scan_frozen` reads of a freeze (``save.freeze.Frozen``): this room sits
    below save and does not import it."""

    @property
    def files(self) -> Iterable[tuple[str, os.stat_result]]: ...
    @property
    def dirs(self) -> Sequence[str]: ...
    @property
    def links(self) -> Sequence[LinkEntry]: ...
    @property
    def skipped(self) -> Sequence[tuple[str, str]]: ...


def scan_frozen(frozen: FrozenState, live_root: Path) -> Scan:
    """What a freeze holds, through the same checks as a scan of the live dir (names,
    mtimes); directory modes are read from the live dir (the freeze area's are ours)."""
    out = Scan(skipped=list(frozen.skipped))
    out.links = [lk for lk in frozen.links if _valid(lk.path, None, out.skipped)]
    for rel, st in frozen.files:
        if _valid(rel, st, out.skipped):
            out.files.append((rel, st))
    for d in frozen.dirs:
        if _valid(d, None, out.skipped):
            try:
                mode: int | None = os.lstat(live_root / d).st_mode & MODE_BITS
            except OSError:
                mode = None
            out.dirs.append(DirEntry(d, mode))
    return out


def _valid(rel: str, st: os.stat_result | None, skipped: list[tuple[str, str]]) -> bool:
    """The scan's own checks, for entries that come from a freeze."""
    try:
        check_relpath(rel)
        if st is not None:
            check_mtime(st.st_mtime_ns, rel)
    except ManifestError as exc:
        skipped.append((rel, f"not checkpointed: {exc}"))
        return False
    return True
