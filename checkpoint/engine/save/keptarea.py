"""The freeze area across agents on one host: kept at a clean exit, taken over at the next
start, instead of removed at exit.

Removing the area unlinks the second name of every file the last freeze linked: each
unlink moves that inode's ctime, so the local index must be carried across it
(:mod:`..localdir.keptacross`), at about 4.5 s per 100,000 files from the job's end to the
agent's exit, under load. Kept, the area costs a stat per entry at exit instead: what
only the area still holds (old versions of files the job replaced or deleted, the copies
of in-place writers) is unlinked, which moves no ctime of the dir; every link left shares
its inode with a file of the dir, and a mark beside the area says so.

The next agent takes the area over only if the mark is there (a killed agent leaves
none: its area may hold anything, and is removed as before). Where its restore rewrote
files, the area lets go of their old versions the same way, a stat per entry. Its first
freeze adopts each entry that is a link to the very inode the dir has at that path (the
same bytes a new link would freeze, and no ctime moved), and removes the rest.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

#: the mark's name is the area's with this suffix, beside it in ``.spot-agent/``
KEPT_SUFFIX = ".kept"


def keep(area: Path, mark: Path) -> None:
    """Let go of what only ``area`` holds (:func:`drop_unshared`), then ``mark`` it."""
    if not area.exists():
        return
    drop_unshared(area)
    with contextlib.suppress(OSError):
        mark.touch(mode=0o600)


def drop_unshared(area: Path) -> None:
    """Unlink every entry of ``area`` that is its inode's last name: no file of the dir
    shares it, so no ctime of the dir moves."""
    for dirpath, _dirs, names in os.walk(area):
        for name in names:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_nlink == 1:
                    os.unlink(path)


def take_over(area: Path, mark: Path) -> bool:
    """Whether ``area`` was kept at the last exit; the mark goes either way, so that an
    agent killed from now on leaves none."""
    kept = mark.exists()
    with contextlib.suppress(FileNotFoundError):
        mark.unlink()
    return kept and area.exists()


def holds(path: Path, key: tuple[int, int]) -> bool:
    """The entry at ``path`` is a regular file whose (st_dev, st_ino) is ``key``."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == key


def remove_unknown(area: Path, known: Callable[[str], bool]) -> None:
    """Unlink every file of ``area`` whose path (relative, '/'-separated) is not ``known``."""
    top = os.fsencode(area)
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(dirpath, name)
            if not known(os.fsdecode(os.path.relpath(path, top))):
                with contextlib.suppress(OSError):
                    os.unlink(path)


class KeptArea:
    """One freeze area's passage from an agent to the next on this host: kept at a clean
    exit (:func:`keep`), taken over at the next start (:func:`take_over`), adopted by the
    first freeze after it (:meth:`adopts`, :meth:`adopted`)."""

    __slots__ = ("adopting", "area", "mark")

    def __init__(self, area: Path) -> None:
        self.area = area
        self.mark = area.with_name(area.name + KEPT_SUFFIX)
        #: an area kept by an earlier agent and not adopted yet: the next freeze adopts
        #: what it can of it and removes the rest
        self.adopting = False

    def keep(self) -> None:
        keep(self.area, self.mark)

    def take_over(self) -> bool:
        """True if an area kept at the last exit is there (or is still, at a second call)."""
        if not self.adopting:
            self.adopting = take_over(self.area, self.mark)
        return self.adopting

    def drop_unshared(self) -> None:
        """The restore rewrote files: a kept area lets go of their old versions."""
        if self.adopting:
            drop_unshared(self.area)

    def adopts(self, rel: str, key: tuple[int, int]) -> bool:
        """Is the kept entry at ``rel`` a link to ``key``, the inode the dir has there?"""
        return self.adopting and holds(self.area / rel, key)

    def adopted(self, known: Callable[[str], bool]) -> None:
        """A freeze has walked the whole dir: what it did not adopt (not ``known``) goes."""
        if self.adopting:
            self.adopting = False
            remove_unknown(self.area, known)

    def forget(self) -> None:
        """The area is removed: nothing is kept any more."""
        self.adopting = False
        with contextlib.suppress(FileNotFoundError):
            self.mark.unlink()
