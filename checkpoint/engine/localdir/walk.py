"""The one walk of a checkpoint dir: what in it is the job's, entry by entry.

Every reader of the dir goes through :func:`walk`: the scan of a sync, the freeze, the
count of what a restore left alone, the set-aside after a restore and ``checkpoints restore
--force``'s pruning. So they agree on every rule:

- the agent's reserved dir (:data:`checkpoint.protocol.RESERVED_DIR`, at the top only) is
  never entered; temporary files of the job API (:data:`~checkpoint.protocol.TEMP_SUFFIX`)
  are not the job's and are left out unless asked for (they are in its sight, though: a
  restore moves them aside);
- symlinks are never followed;
- an entry that vanishes while it is walked was never there; one whose path is too long
  for the system to open (PATH_MAX) is a skipped entry, touched by nobody; a directory
  that cannot be read for any other reason (permissions, I/O) raises :class:`Unreadable`:
  a checkpoint without it would lose it quietly, a restore would leave it unchecked;
- entries come in one order, sorted by name level by level (``path.split("/")``); only
  the listings of the directories on the way down are in memory, however big the tree.

An entry a checkpoint cannot hold (a name or an mtime the manifest refuses, an unsafe
symlink target) is still yielded, with the reason in :attr:`Entry.why`: a sync skips it
loudly, a restore clears it away.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path

from checkpoint.errors import CheckpointError, ManifestError
from checkpoint.protocol import RESERVED_DIR, TEMP_SUFFIX

from ..format.manifest import check_link_target, check_mtime, check_relpath

TOO_LONG = "path longer than the system allows"


class Kind(Enum):
    FILE = "file"
    DIR = "dir"
    LINK = "symlink"
    OTHER = "other"  # a FIFO, socket or device: never checkpointed
    SKIPPED = "skipped"  # a directory that cannot be opened (``why`` says why)


class Unreadable(CheckpointError):
    """A directory of the checkpoint dir cannot be read (not one that vanished)."""


class Entry:
    """One entry below the root: its relative path, its full path, what it is.

    ``st`` is its ``lstat`` and ``target`` a symlink's target, when the walk stats
    (``lstat=True``); ``why`` is non-empty when a checkpoint cannot hold it.
    """

    __slots__ = ("kind", "path", "rel", "st", "target", "why")

    def __init__(
        self,
        rel: str,
        path: str,
        kind: Kind,
        st: os.stat_result | None = None,
        target: str = "",
        why: str = "",
    ) -> None:
        self.rel = rel
        self.path = path
        self.kind = kind
        self.st = st
        self.target = target
        self.why = why

    def __repr__(self) -> str:
        return f"Entry({self.rel!r}, {self.kind.value}{', ' + self.why if self.why else ''})"


def walk(
    root: Path | str,
    *,
    lstat: bool = True,
    temporary: bool = False,
    into: Callable[[Entry], bool] | None = None,
) -> Iterator[Entry]:
    """Every entry below ``root``, directories before what they hold, sorted by name.

    ``lstat``: stat every entry (its kind from the stat, its mtime and a symlink's target
    checked); without it the kind comes from the directory listing (``d_type``), which
    costs no syscall per entry. ``temporary``: yield the job API's temporary files too.
    ``into``: descend into a directory only where it returns true (default: every one);
    never into one a checkpoint cannot hold (its ``why`` is set).
    """
    top = os.fspath(root)
    limit = _path_max(top)
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = []
    listing = _listing(top, "")
    if isinstance(listing, Entry):
        yield listing
        return
    stack.append(("", iter(listing)))
    while stack:
        prefix, entries = stack[-1]
        e = next(entries, None)
        if e is None:
            stack.pop()
            continue
        name = e.name
        if (not prefix and name == RESERVED_DIR) or (not temporary and name.endswith(TEMP_SUFFIX)):
            continue
        if len(os.fsencode(e.path)) >= limit:  # no call on it can succeed: none is made
            yield Entry(prefix + name, e.path, Kind.SKIPPED, why=TOO_LONG)
            continue
        entry = _entry(e, prefix + name, lstat)
        if entry is None:
            continue  # vanished
        yield entry
        if entry.kind is Kind.DIR and not entry.why and (into is None or into(entry)):
            listing = _listing(entry.path, entry.rel)
            if isinstance(listing, Entry):
                yield listing
            else:
                stack.append((entry.rel + "/", iter(listing)))


def _path_max(path: str) -> int:
    """The longest path (bytes, with its NUL) the system takes below ``path``."""
    try:
        return os.pathconf(path, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096  # Linux's


def _listing(path: str, rel: str) -> list[os.DirEntry[str]] | Entry:
    """The directory's entries by name; a skipped entry when its path is too long."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=_name)
    except (FileNotFoundError, NotADirectoryError):
        return []  # vanished, or replaced by a file, since its parent was listed
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return Entry(rel, path, Kind.SKIPPED, why=TOO_LONG)
        raise Unreadable(f"cannot read directory {path}: {exc.strerror}") from exc


def _name(e: os.DirEntry[str]) -> str:
    return e.name


def _entry(e: os.DirEntry[str], rel: str, lstat: bool) -> Entry | None:
    """The entry for ``e``; None if it vanished."""
    why = ""
    try:
        check_relpath(rel)
    except ManifestError as exc:
        why = f"not checkpointed: {exc}"
    if not lstat:
        try:
            if e.is_symlink():
                kind = Kind.LINK
            elif e.is_dir(follow_symlinks=False):
                kind = Kind.DIR
            elif e.is_file(follow_symlinks=False):
                kind = Kind.FILE
            else:  # another type, or gone before an unknown d_type was looked up
                kind = _kind(e.stat(follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return _unstattable(e, rel, exc)
        return Entry(rel, e.path, kind, why=why)
    try:
        st = e.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _unstattable(e, rel, exc)
    kind = _kind(st.st_mode)
    target = ""
    if not why:
        try:
            check_mtime(st.st_mtime_ns, rel)
        except ManifestError as exc:
            why = f"not checkpointed: {exc}"
    if kind is Kind.LINK:
        try:
            target = os.readlink(e.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return _unstattable(e, rel, exc)
        if not why:
            try:
                check_link_target(target)
            except ManifestError as exc:
                why = f"symlink not checkpointed: {exc}"
    elif kind is Kind.OTHER and not why:
        why = "not a regular file, directory or symlink"
    return Entry(rel, e.path, kind, st, target, why)


def _unstattable(e: os.DirEntry[str], rel: str, exc: OSError) -> Entry:
    if exc.errno == errno.ENAMETOOLONG:
        return Entry(rel, e.path, Kind.SKIPPED, why=TOO_LONG)
    raise Unreadable(f"cannot read {e.path}: {exc.strerror}") from exc


def _kind(mode: int) -> Kind:
    if stat.S_ISREG(mode):
        return Kind.FILE
    if stat.S_ISDIR(mode):
        return Kind.DIR
    if stat.S_ISLNK(mode):
        return Kind.LINK
    return Kind.OTHER


__all__ = ["TOO_LONG", "Entry", "Kind", "Unreadable", "walk"]
