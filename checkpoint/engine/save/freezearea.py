"""The freeze area: a mirror of the checkpoint dir's files under ``.spot-agent/freeze/``.

Each file of a freeze is a hard link to the job's inode (so a file the job replaces later
keeps its frozen bytes) or, for a file written in place, a private copy (a reflink where
the filesystem has them). The area remembers which inode each path links, so an unchanged
file is never linked twice, and what it displaces goes to a trash dir by one rename under
the lock, deleted after it. :class:`checkpoint.engine.save.freeze.Freezer` decides what to
link or copy, under the job's save-point lock; this module only keeps the mirror.

The area outlives the agent when it exits cleanly, for the next one on this host to take
over (:mod:`.keptarea`): a link that still holds the very inode the dir has at its path is
adopted, not linked again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from checkpoint.errors import CheckpointError

from ..config import EngineConfig
from ..format.manifest import LinkEntry
from ..localdir.keptacross import kept_across
from ..localdir.stats import FileStats, stat_key
from . import keptarea
from .clone import clone_or_copy

#: a file written this recently may be written again within the filesystem's timestamp
#: granularity: its link made before the lock is not vouched for (see ``FreezeArea.link``)
RACY_NS = 2_000_000_000


class CannotLink(CheckpointError):
    """Hard links into the area are impossible here (another mount, no hard links)."""


@dataclass
class Taken:
    """What one walk of a freeze put in the area, and what it recorded of the dir."""

    files: FileStats = field(default_factory=FileStats)
    dirs: list[str] = field(default_factory=list)
    links: list[LinkEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    relinked: dict[str, os.stat_result] = field(default_factory=dict)
    copy_bytes: int = 0


class FreezeArea:
    """The mirror of one checkpoint dir's files, and what each of its paths holds."""

    def __init__(self, directory: Path, area: Path, trash: Path, config: EngineConfig) -> None:
        self.directory = directory
        self.area = area
        self.trash = trash
        self.copy_budget = config.copy_budget  # bytes copied under the lock in one freeze, at most
        self.boot_id_path = config.boot_id_path  # the local index's: kept across a cleanup
        self._trashed = 0
        self._linked: dict[str, tuple[int, int]] = {}  # rel -> (dev, ino) linked in the area
        #: linked before the lock: rel -> (stat before the link, stat after it)
        self._early: dict[str, tuple[os.stat_result, os.stat_result]] = {}
        self._copies: dict[str, tuple[int, int, int, int]] = {}  # rel -> source key when copied
        self._made_dirs: set[str] = set()
        self.kept = keptarea.KeptArea(area)  # kept by the last agent on this host, or for the next

    def clear(self) -> None:
        """Forget everything (the area is gone): at agent start."""
        self._linked.clear()
        self._early.clear()
        self._copies.clear()
        self._made_dirs.clear()

    def begin_early(self) -> None:
        """A pass of links before the lock begins: the last one's vouchers go."""
        self.area.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._early.clear()

    def link(
        self, src: str, rel: str, st: os.stat_result, out: Taken, early: bool = False
    ) -> os.stat_result | None:
        """Link ``src`` into the area; the stat to record for it, None if it is gone.

        A link changes the file's ctime, which the sync's stat cache compares. For a file
        linked now, the freeze records the stat from before the link and reports the one
        after it in ``relinked``, so the cache still knows the file. A link made before the
        lock (``early``) is vouched for the same way only if nothing can have written the
        file between its stat and the link: unchanged size and mtime, and an mtime older
        than the timestamp granularity could hide.
        """
        key = (st.st_dev, st.st_ino)
        if self._linked.get(rel) != key and self.kept.adopts(rel, key):
            self._linked[rel] = key  # linked by an earlier agent: no new link, no ctime moved
            self._copies.pop(rel, None)
        if self._linked.get(rel) == key:  # the area already holds this very inode
            before_after = self._early.pop(rel, None)
            if before_after is not None and stat_key(before_after[1]) == stat_key(st):
                out.relinked[rel] = before_after[1]
                return before_after[0]
            return st
        dst = self._place(rel)
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileNotFoundError:
            return None  # removed since the scan: not part of this state
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            # No hard links here (another mount, a filesystem without them).
            raise CannotLink(f"{src}: cannot hard-link into {self.area}: {exc.strerror}") from None
        self._linked[rel] = key
        self._copies.pop(rel, None)
        after = os.lstat(dst)
        if not early:
            out.relinked[rel] = after
        elif (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns) and (
            time.time_ns() - st.st_mtime_ns > RACY_NS
        ):
            self._early[rel] = (st, after)
        return st

    def copy(
        self, src: str, rel: str, st: os.stat_result, out: Taken, fresh: bool
    ) -> os.stat_result | None:
        """A private copy, for a file written in place: under the lock, so a whole save.

        ``fresh``: copy even if the stat is unchanged (writes through mmap do not show)."""
        if not fresh and self._copies.get(rel) == stat_key(st):
            return st
        if out.copy_bytes + st.st_size > self.copy_budget:
            out.left_out.append((rel, f"changes in place and is too big to copy ({st.st_size})"))
            return None
        dst = self._place(rel)
        try:
            clone_or_copy(src, dst, st)
            after = os.lstat(src)
        except FileNotFoundError:
            return None
        if _version(after) != _version(st):
            # Written while the lock was held: its writer does not use save points.
            out.left_out.append((rel, "kept changing while it was copied under the lock"))
            with contextlib.suppress(OSError):
                os.unlink(dst)
            return None
        out.copy_bytes += st.st_size
        out.copied.append(rel)
        self._copies[rel] = stat_key(after)
        self._linked.pop(rel, None)
        return st

    def _place(self, rel: str) -> Path:
        """The area's path for ``rel``: parents made, whatever stood there removed."""
        parent = rel.rpartition("/")[0]
        if parent and parent not in self._made_dirs:
            cur = self.area
            done = ""
            for part in parent.split("/"):
                cur, done = cur / part, f"{done}{part}"
                with contextlib.suppress(FileNotFoundError):
                    if not stat.S_ISDIR(os.lstat(cur).st_mode):
                        self._to_trash(cur, done)  # a file of an older freeze where a dir is now
                with contextlib.suppress(FileExistsError):
                    os.mkdir(cur, 0o700)
                done += "/"
            self._made_dirs.add(parent)
        dst = self.area / rel
        try:
            os.lstat(dst)
        except FileNotFoundError:
            return dst
        self._to_trash(dst, rel)  # an older version, or a dir where a file is now
        return dst

    def _to_trash(self, path: Path, rel: str) -> None:
        """Out of the way in one rename, and forgotten (:meth:`_drop`)."""
        self.trash.mkdir(exist_ok=True, mode=0o700)
        self._trashed += 1
        os.rename(path, self.trash / str(self._trashed))
        self._drop(rel)

    def _drop(self, rel: str) -> None:
        """Forget the area's entries at ``rel`` and below it."""
        below = rel + "/"
        for table in (self._linked, self._copies):
            for r in [r for r in table if r == rel or r.startswith(below)]:
                del table[r]
        self._made_dirs = {d for d in self._made_dirs if d != rel and not d.startswith(below)}

    def forget_missing(self, seen: set[str]) -> None:
        """Drop the area's entries for files that are gone from the dir (outside the lock)."""
        for table in (self._linked, self._copies):
            for rel in [r for r in table if r not in seen]:
                table.pop(rel, None)
                with contextlib.suppress(OSError):
                    os.unlink(self.area / rel)

    def held_bytes(self) -> int:
        """Disk the area holds beyond the dir: inodes only it still links, and copies."""
        total = 0
        for rel in list(self._linked):
            with contextlib.suppress(OSError):
                st = os.lstat(self.area / rel)
                if st.st_nlink == 1:
                    total += st.st_blocks * 512
        for rel in list(self._copies):
            with contextlib.suppress(OSError):
                total += os.lstat(self.area / rel).st_blocks * 512
        return total

    def release(self) -> None:
        """Let go of the inodes only the area still holds (its freeze is committed); the
        next freeze relinks what it needs."""
        for rel in list(self._linked):
            with contextlib.suppress(OSError):
                if os.lstat(self.area / rel).st_nlink == 1:
                    os.unlink(self.area / rel)
                    del self._linked[rel]

    def keep(self) -> None:
        """At agent exit: keep the area for the next agent (:func:`.keptarea.keep`)."""
        self.empty_trash()
        self.kept.keep()
        self.clear()

    def take_over(self) -> bool:
        """At agent start: is an area kept at the last exit there, for the next freeze?"""
        if not self.kept.adopting:
            self.clear()
        return self.kept.take_over()

    def adopted(self) -> None:
        """A freeze has walked the whole dir: what it did not adopt of the kept area goes."""
        self.kept.adopted(lambda r: r in self._linked or r in self._copies)

    def remove(self) -> int:
        """The area and the trash go; the bytes they held. Their links share inodes with the
        dir's files, and an unlink moves the inode's ctime: the local index is carried."""
        removed = _tree_bytes(self.area) + _tree_bytes(self.trash)
        self.clear()
        self.kept.forget()
        if not (self.area.exists() or self.trash.exists()):
            return removed
        with kept_across(self.directory, self.boot_id_path):
            shutil.rmtree(self.area, ignore_errors=True)
            shutil.rmtree(self.trash, ignore_errors=True)
        return removed

    def empty_trash(self) -> None:
        shutil.rmtree(self.trash, ignore_errors=True)


def _version(st: os.stat_result) -> tuple[int, int, int]:
    """What a copy checks has not moved while it copied (not ctime: unlinking the area's
    older link to the inode just moved it)."""
    return st.st_size, st.st_mtime_ns, st.st_ino


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total
