"""The whole-tree checks of a manifest (:func:`.manifest.check_tree`: every path once,
nothing below a file or a link, hard links to files) in one pass, for entries in the walk's
order, as sync writes them: no set of every path.

In that order (each kind sorted by ``path.split("/")``, the kinds merged), a path listed
twice is two neighbours, and whatever lies below a file or a link comes right after it,
before anything beside it. Entries in another order (an older agent's, a forged manifest)
are left to :func:`.manifest.check_tree`, which holds sets of every path.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from checkpoint.errors import ManifestError

from .manifest import DirEntry, FileEntry, HardLinkEntry, LinkEntry, check_tree


def check_tree_streaming(
    files: Iterable[FileEntry],
    dirs: Iterable[DirEntry],
    links: Iterable[LinkEntry],
    hardlinks: Iterable[HardLinkEntry],
) -> None:
    """:func:`.manifest.check_tree`, in one pass when the entries are in the walk's order."""
    hardlinks = tuple(hardlinks)
    if not in_walk_order(files, dirs, links, hardlinks):
        check_tree(files, dirs, links, hardlinks)


def _tagged(entries: Iterable[Any], leaf: bool, file: bool) -> Iterator[tuple[Any, ...]]:
    return ((e.path.split("/"), e.path, leaf, file) for e in entries)


def _key(t: tuple[Any, ...]) -> list[str]:
    return t[0]  # type: ignore[no-any-return]


def in_walk_order(
    files: Iterable[FileEntry],
    dirs: Iterable[DirEntry],
    links: Iterable[LinkEntry],
    hardlinks: tuple[HardLinkEntry, ...],
) -> bool:
    """The checks, raising :class:`ManifestError` as :func:`.manifest.check_tree` does;
    False, before any conclusion, when the entries are not in the walk's order. Each kind
    is read once, in step with the others: ``files`` may be a stream (a restore of pages,
    :mod:`..restore.streamed`), only the hard links are held."""
    targets = {h.target for h in hardlinks}  # not met among the files yet
    merged = heapq.merge(
        _tagged(files, True, True),
        _tagged(dirs, False, False),
        _tagged(links, True, False),
        _tagged(hardlinks, True, False),
        key=_key,
    )
    before: list[str] | None = None
    below = "\x00"  # what starts the paths below the last file or link: none starts so
    for key, path, leaf, file in merged:
        if before is not None and key <= before:
            if key < before:  # the merge keeps each kind's order: one kind is not sorted
                return False
            raise ManifestError(f"path {path!r} appears twice")
        if path.startswith(below):
            raise ManifestError(f"path {path!r} lies below the file or symlink {below[:-1]!r}")
        if leaf:
            below = path + "/"
        if file:
            targets.discard(path)
        before = key
    for h in hardlinks:
        if h.target in targets:
            raise ManifestError(f"hard link {h.path!r} points at {h.target!r}, not a file")
    return True
