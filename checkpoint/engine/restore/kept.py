"""What a restore can keep of what the checkpoint dir already holds, and what else is there.

A file is kept without a read when the local index vouches for it (:mod:`checkpoint.
localindex`), else after reading it against its chunks' hashes; the rest is fetched. Both
passes here use strings and ``os`` calls rather than ``pathlib``: a warm restart of 20,000
files must take milliseconds, and pathlib's objects cost more than the syscalls.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from ..format.manifest import FileEntry, HardLinkEntry, LinkEntry, Manifest
from ..localdir.localindex import LocalIndex
from ..localdir.scan import file_matches
from ..localdir.stats import StatMap
from ..localdir.walk import Kind, walk
from .placement import real_parents


@dataclass
class Partition:
    kept: list[FileEntry] = field(default_factory=list)
    fetch: list[FileEntry] = field(default_factory=list)
    hashed: int = 0  # bytes read to check files the index did not vouch for
    #: lstat of files kept untouched on the index's word (mode and mtime already right)
    stats: StatMap = field(default_factory=StatMap)


def partition(manifest: Manifest, dest: Path, index: LocalIndex | None) -> Partition:
    """Files already present with the right content are kept, the rest are to fetch."""
    out = Partition()
    root = os.fspath(dest)
    real: dict[str, bool] = {"": True}  # parent dir -> no link on the way (the tree is still)
    for f in manifest.files:
        parent, _, _ = f.path.rpartition("/")
        if parent not in real:  # one check per directory, not per file
            real[parent] = real_parents(dest, f.path)
        if not real[parent]:
            out.fetch.append(f)  # a link on the way could lead out of the checkpoint dir
            continue
        path = f"{root}/{f.path}"
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            out.fetch.append(f)
            continue
        if index is not None and index.vouches(f, st):
            out.stats[f.path] = st
            out.kept.append(f)
            continue
        if not (stat.S_ISREG(st.st_mode) and st.st_size == f.size):
            out.fetch.append(f)
            continue
        out.hashed += f.size
        if file_matches(Path(path), f):
            os.chmod(path, f.mode)
            os.utime(path, ns=(f.mtime_ns, f.mtime_ns))
            out.kept.append(f)
        else:
            out.fetch.append(f)
    return out


def count_extra(dest: Path, manifest: Manifest) -> int:
    """Regular files below ``dest`` that the checkpoint does not have and a sync would
    take (:mod:`..localdir.walk`'s rules), told by ``d_type``: no stat. The walk and the
    manifest's paths (in the walk's order, as sync writes them) are merged: no set of
    every path, unless the manifest lists them in another order."""
    kinds = (manifest.files, manifest.links, manifest.hardlinks)
    files = (e.rel for e in walk(dest, lstat=False) if e.kind is Kind.FILE and not e.why)
    if not all(_in_walk_order(k) for k in kinds):
        listed = {f.path for f in manifest.files} | {lk.path for lk in manifest.links}
        listed |= {h.path for h in manifest.hardlinks}
        return sum(1 for rel in files if rel not in listed)
    paths = heapq.merge(*((e.path.split("/") for e in k) for k in kinds))
    at = next(paths, None)
    extra = 0
    for rel in files:
        key = rel.split("/")
        while at is not None and at < key:
            at = next(paths, None)
        if at != key:
            extra += 1
    return extra


def _in_walk_order(entries: Sequence[FileEntry | LinkEntry | HardLinkEntry]) -> bool:
    keys = (e.path.split("/") for e in entries)
    return all(a < b for a, b in pairwise(keys))
