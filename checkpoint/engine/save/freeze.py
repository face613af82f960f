"""The freeze: the checkpoint dir as it stood at a save point, for a sync to read at leisure.

The agent freezes between two of the job's saves, holding its save-point lock
(:mod:`.savemark`: the lock, a save cut off by a kill, a save point declared since). It
records every file's metadata and hard-links each file whose inode it has not linked before
into a mirror under ``.spot-agent/freeze/`` (same filesystem, never synced). Files the job
replaces later (temp file and rename) keep their frozen inode alive in the mirror, so the
sync reads the state of the save point while the job goes on. Unchanged files are not
linked again, so the time under the lock is a stat per file plus a link per new file,
whatever the size of the data.

A file rewritten in place (same inode) after the freeze would change under the sync: the
sync detects it (the stat after hashing differs from the frozen one) and the next freeze
copies that file under the lock (a reflink where the filesystem has them).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from checkpoint.protocol import RESERVED_DIR, progress_path
from checkpoint.savelabel import with_save_label
from checkpoint.savelock import SaveIncomplete, SaveInProgress

from ..config import DEFAULTS, EngineConfig
from ..format.manifest import LinkEntry
from ..localdir.stats import FileStats
from ..localdir.walk import TOO_LONG, Kind, walk
from .freezearea import CannotLink, FreezeArea, Taken
from .savemark import NotDeclared, SavePointLock

log = structlog.get_logger("checkpoint")

FREEZE_NAME = "freeze"
#: what a freeze displaces is moved here under the lock (a rename) and deleted after it:
#: freeing a big file's blocks can take a while
TRASH_NAME = "freeze-trash"


@dataclass(frozen=True)
class Frozen:
    """One freeze: what the sync reads (``root``) and the stats taken under the lock."""

    root: Path
    files: FileStats
    dirs: tuple[str, ...]
    links: tuple[LinkEntry, ...]
    skipped: tuple[tuple[str, str], ...]
    left_out: tuple[tuple[str, str], ...]  # (path, why): the sync keeps their last version
    progress: dict[str, Any]
    taken: float  # time.time() when the lock was taken: the moment this state is from
    lock_seconds: float
    copied: tuple[str, ...] = ()
    #: files linked by this freeze: their stat after the link (the link changed ctime)
    relinked: dict[str, os.stat_result] = field(default_factory=dict)


class Freezer:
    """The freeze area of one checkpoint dir; used by one sync at a time."""

    def __init__(self, directory: Path, *, config: EngineConfig = DEFAULTS) -> None:
        self.directory = directory
        self.save_points = SavePointLock(directory, long_save=config.long_save_seconds)
        self.lock_path = self.save_points.path
        self.area = directory / RESERVED_DIR / FREEZE_NAME
        self.trash = directory / RESERVED_DIR / TRASH_NAME
        self._mirror = FreezeArea(directory, self.area, self.trash, config)
        #: files to copy rather than link at the next freezes (they changed in place)
        self.copy_paths: set[str] = set()
        #: the newest freeze whose state is not committed yet, whole in the area
        self.pending: Frozen | None = None
        #: a freeze has been committed since the start: with no pending one, the last
        #: consistent state the agent saw is in the store
        self.committed_any = False
        self.usable = True  # False once links turned out impossible here: sync the live dir

    def cut_off(self) -> str | None:
        """At agent start, before :meth:`reset`: who began a save that never ended ("" if
        unknown), else None (:meth:`.savemark.SavePointLock.cut_off`)."""
        return self.save_points.cut_off()

    def reset(
        self, *, create_lock: bool = True, keep_mark: bool = False, keep_area: bool = False
    ) -> int:
        """At agent start: drop what a killed agent left; create the lock file (and
        ``.spot-agent/``) for the job unless ``create_lock`` is false. A killed saver's mark
        is emptied unless ``keep_mark``: kept, it makes every freeze refuse the dir until
        the job completes a save (see :meth:`cut_off`). ``keep_area``: an area kept at the
        last agent's exit stays, for the next freeze to adopt (:mod:`.keptarea`); without
        it, or with no such area, the area is removed.

        Returns the bytes removed.
        """
        removed = 0 if keep_area and self._mirror.take_over() else self._mirror.remove()
        self.save_points.reset(create=create_lock, keep_mark=keep_mark)
        self.pending = None
        return removed

    def restored(self, files_written: int) -> None:
        """After the restore at start: a kept area lets go of the old versions of the files
        it rewrote (a stat per entry), so that it holds no disk beyond the dir."""
        if files_written:
            self._mirror.kept.drop_unshared()

    def close(self) -> None:
        """At agent exit: the trash and the lock file go; the area lets go of what it alone
        holds and stays for the next agent on this host (:mod:`.keptarea`: no file of the
        dir is unlinked, so no ctime moves); ``.spot-agent/`` goes if nothing is left in it.
        The job is gone by then: nobody holds the lock."""
        self._mirror.keep()
        self.save_points.remove()

    # -- the freeze -------------------------------------------------------------------

    def freeze(
        self,
        wait: float,
        *,
        copy_inodes: Collection[tuple[int, int]] = (),
        waiting: Callable[[float], None] | None = None,
        declared_only: bool = False,
    ) -> Frozen:
        """Take the lock (waiting up to ``wait`` seconds for a save to end), freeze, release.

        ``copy_inodes``: (dev, ino) of files open for writing (mmap): copied, not linked.
        ``declared_only``: freeze only if a save point ended since the last freeze (the
        lock file's mtime moved), else raise :class:`NotDeclared`.
        Raises :class:`SaveInProgress` or :class:`SaveIncomplete`.
        """
        self.lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.pending is None:
            # Most of the linking before the lock, so that under it the walk is a stat per
            # file and a link only for what changed meanwhile. Not while an uncommitted
            # freeze is kept as the last consistent one: this would change the area.
            self._mirror.begin_early()
            self._walk(Taken(), set(), (), early=True)
        with self.save_points.held(wait, waiting, declared_only) as (taken, t0):
            self.pending = None  # the area changes now: the older freeze is gone
            walked = Taken()
            self.area.mkdir(parents=True, exist_ok=True, mode=0o700)
            seen: set[str] = set()
            self._walk(walked, seen, set(copy_inodes))
            progress = self._progress()
            held = time.monotonic() - t0
        self._mirror.empty_trash()
        self._mirror.forget_missing(seen)
        self._mirror.adopted()
        frozen = _frozen(self.area, walked, progress, taken, held)
        self.pending = frozen
        return frozen

    @contextlib.contextmanager
    def in_place(
        self,
        wait: float,
        *,
        waiting: Callable[[float], None] | None = None,
        declared_only: bool = False,
    ) -> Iterator[Frozen]:
        """The dir itself as its freeze, for the last sync once the job's processes are all
        gone: the lock and the checks of :meth:`freeze`, its walk (a stat per file), but no
        link and no copy. The lock is held until the block ends, so that nothing the job
        left behind saves while the sync reads; a file changed all the same shows in its
        stat and fails the sync (``FrozenFilesChanged``), as with a freeze.

        After a warm restart with no freeze yet, a freeze would link every file of the dir
        into the area (rewriting the local index for the ctime each link moves): for
        100,000 files most of the time from the job's end to the agent's exit. The area
        is left as it is, so a freeze not committed yet stays the last consistent state
        until this one commits (:meth:`committed`).
        """
        with self.save_points.held(wait, waiting, declared_only) as (taken, t0):
            walked = Taken()
            self._walk(walked, set(), (), in_place=True)
            progress = self._progress()
            yield _frozen(self.directory, walked, progress, taken, time.monotonic() - t0)

    def _progress(self) -> dict[str, Any]:
        """The job's progress figures and the save's label, read under the lock."""
        progress = _read_json(progress_path(self.directory))
        return with_save_label(progress, self.directory / RESERVED_DIR)

    def _walk(
        self,
        out: Taken,
        seen: set[str],
        copy: Collection[tuple[int, int]],
        early: bool = False,
        in_place: bool = False,
    ) -> None:
        """Link (or copy) every file of the dir into the area, recording what the freeze
        holds in ``out``. ``early``: only link, before the lock; nothing is recorded.
        ``in_place``: only record, each file as the dir holds it (:meth:`in_place`)."""
        for e in walk(self.directory):
            r, st = e.rel, e.st
            if e.why or st is None:  # st: the walk stats all it does not skip
                out.skipped.append((r, e.why))
            elif e.kind is Kind.LINK:
                out.links.append(LinkEntry(r, e.target))
            elif e.kind is Kind.DIR:
                out.dirs.append(r)
            elif e.kind is Kind.FILE:
                seen.add(r)
                if in_place:
                    out.files.append((r, st))
                    continue
                mapped = (st.st_dev, st.st_ino) in copy
                try:
                    if early:
                        if r not in self.copy_paths:
                            self._mirror.link(e.path, r, st, out, early=True)
                        continue
                    if mapped or r in self.copy_paths:
                        placed = self._mirror.copy(e.path, r, st, out, fresh=mapped)
                    else:
                        placed = self._mirror.link(e.path, r, st, out)
                except CannotLink:
                    self.usable = False
                    raise
                except OSError as exc:  # its place in the area is deeper than the dir
                    if exc.errno != errno.ENAMETOOLONG:
                        raise
                    out.skipped.append((r, TOO_LONG))
                    continue
                if placed is not None:
                    out.files.append((r, placed))

    # -- after the sync ---------------------------------------------------------------

    def held_bytes(self) -> int:
        """Disk the area holds beyond the dir: inodes only it still links, and copies."""
        return self._mirror.held_bytes()

    def changed_in_place(self, paths: Collection[str]) -> None:
        """``paths`` were written in place after the pending freeze: it is not one save.
        The next freeze copies them under the lock instead of linking them."""
        self.copy_paths.update(paths)
        self.pending = None

    def unusable(self) -> None:
        """The freeze area cannot be prepared here: syncs read the live dir."""
        self.usable = False

    def committed(self, *, release: bool = True) -> None:
        """The pending freeze is committed (or equal to the last commit): let go of the
        inodes only the area still holds; the next freeze relinks what it needs.
        ``release``: false after a sync :meth:`in_place`, the last one: the area goes at
        :meth:`close`, so a pass over it now would only repeat that work."""
        self.pending = None
        self.committed_any = True
        if release:
            self._mirror.release()


def _frozen(
    root: Path, walked: Taken, progress: dict[str, Any], taken: float, held: float
) -> Frozen:
    return Frozen(
        root=root,
        files=walked.files,
        dirs=tuple(walked.dirs),
        links=tuple(walked.links),
        skipped=tuple(walked.skipped),
        left_out=tuple(walked.left_out),
        progress=progress,
        taken=taken,
        lock_seconds=held,
        copied=tuple(walked.copied),
        relinked=walked.relinked,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


__all__ = ["Freezer", "Frozen", "NotDeclared", "SaveInProgress", "SaveIncomplete"]
