"""Putting restored entries in place below a root without ever following a link out of it.

Guarantee 5 of DESIGN.md: nothing read from the store can write outside the checkpoint
dir. Every directory on the way to a restored entry is checked with ``lstat`` and created
(or replaced) as a real directory; a symlink found on the way is removed, never followed.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from ..format.manifest import DirEntry, HardLinkEntry, LinkEntry, check_link_target


def real_parents(root: Path, rel: str) -> bool:
    """Every directory between root and rel exists and is a real directory, not a link."""
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            if not stat.S_ISDIR(os.lstat(cur).st_mode):
                return False
        except OSError:
            return False
    return True


def safe_parent(root: Path, rel: str) -> Path:
    """The real directory that will hold ``rel``, created as needed, never through a link."""
    cur = root
    for part in rel.split("/")[:-1]:
        cur = cur / part
        ensure_real_dir(cur)
    return cur


def safe_makedirs(root: Path, rel: str) -> Path:
    cur = root
    for part in rel.split("/"):
        cur = cur / part
        ensure_real_dir(cur)
    return cur


def ensure_real_dir(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, 0o700)
        return
    if stat.S_ISDIR(st.st_mode):
        if st.st_mode & 0o700 != 0o700:  # its own mode comes back last; we must write in it
            os.chmod(path, stat.S_IMODE(st.st_mode) | 0o700)
        return
    # A file or a symlink where the checkpoint has a directory: the checkpoint wins, and a
    # symlink is never followed (it could lead out of the checkpoint dir).
    os.unlink(path)
    os.mkdir(path, 0o700)


def place_links(root: Path, links: Iterable[LinkEntry], hardlinks: Iterable[HardLinkEntry]) -> None:
    """The symlinks, then the hard links (to files already in place), below ``root``."""
    for lk in links:
        target = safe_parent(root, lk.path) / lk.path.rsplit("/", 1)[-1]
        clear_for_file(target)
        os.symlink(check_link_target(lk.target), target)
    for h in hardlinks:
        target = safe_parent(root, h.path) / h.path.rsplit("/", 1)[-1]
        clear_for_file(target)
        source = safe_parent(root, h.target) / h.target.rsplit("/", 1)[-1]
        os.link(source, target, follow_symlinks=False)


def set_dir_modes(root: Path, dirs: Iterable[DirEntry]) -> None:
    """Deepest first, last of all: a read-only directory must not stop its own restore."""
    for d in sorted(dirs, key=lambda d: d.path.count("/"), reverse=True):
        if d.mode is not None:
            os.chmod(safe_makedirs(root, d.path), d.mode)


def clear_for_file(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        rmtree(path)
    else:
        os.unlink(path)


def os_error(exc: OSError) -> str:
    """'path: No space left on device', without Python's '[Errno 28]' noise."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
