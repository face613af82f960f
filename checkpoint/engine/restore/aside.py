"""After a restore, the checkpoint dir holds the checkpoint and nothing else.

What the checkpoint does not have (the files and directories of a save that was never
committed, the temporary file of a write that was cut off) is moved out of the job's sight
into ``.spot-agent/aside/``, which no sync reads and no restore writes: it is neither left
where the job would resume from it nor committed by the next sync, and an operator can
still look at it. The area is bounded: a restore that moves something replaces what an
earlier one moved there, so it holds one restore's leftovers at most.

Everything is moved by ``rename(2)`` within the dir (one metadata operation per top-most
entry, whatever its size); what cannot be renamed (another mount below the dir) is deleted,
never left in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from checkpoint.protocol import RESERVED_DIR

from ..format.manifest import Manifest
from ..localdir.walk import Entry, Kind, walk

ASIDE_NAME = "aside"


@dataclass(frozen=True)
class SetAside:
    """What a restore took out of the job's sight: top-most entries moved, regular files
    among them, and where they are now (None when nothing was moved)."""

    entries: int = 0
    files: int = 0
    where: Path | None = None
    deleted: int = 0  # entries that could not be moved, deleted instead


def aside_area(directory: Path) -> Path:
    return directory / RESERVED_DIR / ASIDE_NAME


def set_aside(directory: Path, manifest: Manifest) -> SetAside:
    """Move every entry below ``directory`` that ``manifest`` does not have into the aside
    area (the reserved dir excepted). The directory is the agent's: nothing writes in it
    meanwhile."""
    keep_files = {f.path for f in manifest.files}
    keep_files |= {lk.path for lk in manifest.links} | {h.path for h in manifest.hardlinks}
    keep_dirs = {d.path for d in manifest.dirs}
    for path in (*keep_files, *keep_dirs):  # a format-1 manifest may not list every parent
        parent = path.rpartition("/")[0]
        while parent and parent not in keep_dirs:
            keep_dirs.add(parent)
            parent = parent.rpartition("/")[0]
    # The top-most entries the checkpoint lacks, temporary files included: the walk goes
    # only into the directories the checkpoint has.
    extra = [
        (e.rel, e.path)
        for e in walk(directory, lstat=False, temporary=True, into=lambda d: d.rel in keep_dirs)
        if e.kind is not Kind.SKIPPED  # too long to open: nothing can be done with it
        and (e.rel not in (keep_dirs if e.kind is Kind.DIR else keep_files) or not _is_entry(e))
    ]
    if not extra:
        return SetAside()
    area = aside_area(directory)
    shutil.rmtree(area, ignore_errors=True)  # bounded: the previous restore's leftovers go
    area.mkdir(parents=True, mode=0o700)
    moved = files = deleted = 0
    for r, path in sorted(extra):
        count = _count_files(path)
        target = area / r
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.rename(path, target)
        except FileNotFoundError:
            continue  # vanished since the walk (it named it from the listing alone)
        except OSError:
            _delete(path)  # never left where the job would see it
            deleted += 1
        moved += 1
        files += count
    return SetAside(moved, files, area, deleted)


def _is_entry(e: Entry) -> bool:
    """What the checkpoint has may stand here: a directory where it has one, a file,
    symlink or hard link where it has one of those (not a FIFO)."""
    return e.kind in (Kind.DIR, Kind.FILE, Kind.LINK)


def _count_files(path: str) -> int:
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return 1
    except OSError:
        return 0
    return sum(len(files) for _d, _s, files in os.walk(path))


def _delete(path: str) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    if os.path.lexists(path):
        raise OSError(f"{path}: not in the checkpoint, and can be neither moved nor deleted")
