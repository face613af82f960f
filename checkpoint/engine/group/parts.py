"""A part's save label, and the union of the parts of one save point."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from ...errors import ManifestError
from ...savelabel import LABEL_KEY
from ..format.manifest import DirEntry, FileEntry, HardLinkEntry, LinkEntry, Manifest


def label_of(manifest: Manifest) -> str | None:
    label = manifest.progress.get(LABEL_KEY)
    return label if isinstance(label, str) and label else None


class PathConflict(ManifestError):
    """Two ranks' parts hold one path with different contents."""

    def __init__(self, label: str, paths: list[str]) -> None:
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        super().__init__(
            f"save point {label!r}: ranks hold different contents under one path: {shown}"
        )
        self.paths = paths


Entry = FileEntry | LinkEntry | HardLinkEntry


def _identity(entry: Entry) -> tuple[Any, ...]:
    """What must be equal for two ranks' entries of one path to be one entry."""
    if isinstance(entry, FileEntry):
        return ("file", entry.size, entry.mode, tuple((c.digest, c.size) for c in entry.chunks))
    return (type(entry).__name__, entry.target)


def merge_parts(parts: Iterable[Manifest], label: str, into: Manifest) -> Manifest:
    """The union of every rank's part, as ``into`` (the rank's own part: its sequence, job
    and progress). Raises :class:`PathConflict` naming the paths two ranks disagree on."""
    entries: dict[str, Entry] = {}
    dirs: dict[str, DirEntry] = {}
    conflicts: set[str] = set()
    packs = dict(into.packs)
    for part in parts:
        packs.update(part.packs)
        for d in part.dirs:
            if d.path in entries:  # a file (or link) in one part, a directory in another
                conflicts.add(d.path)
            dirs.setdefault(d.path, d)
        typed: list[Entry] = [*part.files, *part.links, *part.hardlinks]
        for entry in typed:
            seen = entries.setdefault(entry.path, entry)
            if entry.path in dirs or _identity(seen) != _identity(entry):
                conflicts.add(entry.path)
    if conflicts:
        raise PathConflict(label, sorted(conflicts))
    by_path = sorted(entries.values(), key=lambda e: e.path.split("/"))
    return replace(
        into,
        files=tuple(e for e in by_path if isinstance(e, FileEntry)),
        dirs=tuple(sorted(dirs.values(), key=lambda d: d.path.split("/"))),
        links=tuple(e for e in by_path if isinstance(e, LinkEntry)),
        hardlinks=tuple(e for e in by_path if isinstance(e, HardLinkEntry)),
        packs=packs,
        pages=(),  # the union is stored as no one manifest: it has no pages of its own
    )
