"""A sync's manifest, from its entries to a commit in the store.

What the entries become once every upload is done (each chunk's place: a blob or a pack),
what stands in for files that kept changing (their last committed version), which hard
links survive, and the commit itself: create-only, after checking that this attempt is
still current and that no forced sweep took what the manifest names.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from checkpoint._version import __version__
from checkpoint.errors import CheckpointError, CommitConflict, ManifestError
from checkpoint.protocol import progress_path

from ..format.jobstore import JobStore, utc_iso
from ..format.layout import MANIFESTS
from ..format.manifest import Chunk, FileEntry, HardLinkEntry, Manifest
from ..lease import SweepWatch
from ..localdir.scan import Scan
from ..localdir.statcache import StatCache
from .known import KnownChunks
from .upload import Location, Stored, Uploader

log = structlog.get_logger("checkpoint")


def assemble(
    job_id: str,
    base: Manifest | None,
    entries: list[FileEntry],
    found: Scan,
    where: Places,
    left_out: list[tuple[str, str]],
    *,
    attempt: int,
    reason: str,
    progress: dict[str, Any],
    cache: StatCache,
) -> Manifest:
    """The next manifest after ``base``: ``entries`` with their chunks' places, the last
    committed version of each file ``left_out``, the dirs, links and hard links ``found``.

    ``entries`` is placed in place, and ``cache`` told each placed entry as it goes: the
    chunks as hashed are dropped file by file, never held beside the placed ones.
    """
    for i, e in enumerate(entries):
        placed = located(e, where)
        if placed is not e:  # else the cache holds this very entry already
            entries[i] = placed
            cache.share(placed)
    if left_out:  # in the walk's order: sorted by name, level by level
        entries.extend(previous_versions(base, left_out))
        entries.sort(key=lambda e: e.path.split("/"))
    return Manifest(
        job_id=job_id,
        sequence=(base.sequence if base else 0) + 1,
        attempt=attempt,
        created=utc_iso(),
        reason=reason,
        files=tuple(entries),
        dirs=tuple(found.dirs),
        links=tuple(found.links),
        progress=progress,
        agent_version=__version__,
        hardlinks=resolvable(found.hardlinks, {e.path for e in entries}),
    )


def commit(
    job: JobStore,
    manifest: Manifest,
    *,
    base: Manifest | None,
    attempt: int,
    sweeps: SweepWatch,
    known: KnownChunks,
    paged_above: int,
) -> Manifest:
    """Commit ``manifest`` (renumbered past any racing attempt's); the committed one."""
    last = base  # its pages are stored: not PUT, nor made, again
    # What it names, only looked at when a sweep ran: a set of every chunk is O(files).
    names = (n for named in (manifest.stored_blobs, manifest.pack_ids) for n in named())
    gone = sweeps.gone(job, names)
    if gone is not None:  # a forced gc or delete ran: its pages may be gone too
        last = None
    if gone:  # a forced gc or delete took objects this sync took as stored
        known.forget(gone)
        raise CheckpointError(
            f"not committing: {len(gone)} stored objects it names were deleted by a "
            f"forced gc or delete of the job (e.g. {sorted(gone)[0]}); the next sync "
            "uploads them again"
        )
    for _ in range(10):
        job.check_current(attempt)
        try:  # what sync commits, restore accepts: the very same check, before the commit
            committed = job.commit(manifest, last=last, paged_above=paged_above)
        except ManifestError as exc:
            why = f"not committing a checkpoint restore would refuse: {exc}"
            raise CheckpointError(why) from None
        if committed is not None:
            return committed
        # Someone else took this number. If they are newer, check_current says so next
        # time round; otherwise (a stale attempt racing us) we commit after them.
        latest = (job.sequences() or [manifest.sequence])[-1]
        manifest = replace(manifest, sequence=max(latest, manifest.sequence) + 1)
    raise CommitConflict(f"{job.folder(MANIFESTS)}: lost the commit race ten times")


def previous_versions(base: Manifest | None, left_out: list[tuple[str, str]]) -> list[FileEntry]:
    """Files that kept changing: their last committed version stands in for them."""
    before = {f.path: f for f in base.files} if base else {}
    kept = []
    for rel, why in left_out:
        entry = before.get(rel)
        log.warning(
            "sync.file_left_out",
            path=rel,
            why=why,
            action="kept its last committed version" if entry else "not in this checkpoint",
        )
        if entry is not None:
            kept.append(entry)
    return kept


class Places:
    """Where each chunk lies once every upload of a sync is done, looked up in the maps it
    came from rather than in a merged copy of them (a copy is ~50 bytes a chunk).

    A blob: stored before the sync (``stored``) or uploaded as one by it. A packed chunk:
    in the pack this sync put it in, else where it was stored, else (a sparse pack's chunk
    that was not packed again) its old place, ``moved``.
    """

    def __init__(self, stored: Stored, uploader: Uploader, moved: dict[str, Location]) -> None:
        self.stored = stored
        self.uploaded = uploader.done
        self.located = uploader.located
        self.moved = moved

    def locate(self, chunk: Chunk) -> Chunk:
        """``chunk`` with its place; KeyError if it is neither stored nor uploaded."""
        at = self._place(chunk)
        return (
            Chunk(chunk.digest, chunk.size) if at is None else Chunk(chunk.digest, chunk.size, *at)
        )

    def holds(self, chunk: Chunk) -> bool:
        """Is ``chunk`` where :meth:`locate` would place it already? No new object: most
        chunks of a sync are those of unchanged files, placed by the commit before.
        KeyError as :meth:`locate`."""
        return (chunk.pack, chunk.offset) == (self._place(chunk) or (None, 0))

    def _place(self, chunk: Chunk) -> Location | None:
        """The pack and offset of ``chunk``; None for a blob (or a hole)."""
        h = chunk.digest
        if chunk.is_hole or h in self.stored.blobs:
            return None
        at = self.located.get(h)
        if at is None and h in self.uploaded:
            return None
        return at or self.stored.packed.get(h) or self.moved[h]


def located(entry: FileEntry, where: Places) -> FileEntry:
    """``entry`` with each chunk's place (its blob, or its pack and range)."""
    try:
        if all(where.holds(c) for c in entry.chunks):
            return entry  # a file the stat cache vouched for, most often: placed already
        chunks = tuple(where.locate(c) for c in entry.chunks)
    except KeyError as exc:  # a bug, never the store: say so rather than commit a guess
        raise CheckpointError(f"{entry.path}: chunk {exc} was neither uploaded nor known") from None
    # Unchanged (a file the stat cache vouched for): the entry's own chunks, not a copy.
    return entry if chunks == entry.chunks else replace(entry, chunks=chunks)


def content(m: Manifest) -> Any:
    """What makes two manifests the same checkpoint (not their number, time or reason)."""
    return (m.files, m.dirs, m.links, m.hardlinks, m.progress)


def resolvable(hardlinks: list[HardLinkEntry], files: set[str]) -> tuple[HardLinkEntry, ...]:
    """Hard links whose file made it into the checkpoint (it may vanish mid-scan)."""
    for h in hardlinks:
        if h.target not in files:
            log.warning("sync.file_skipped", path=h.path, why=f"its other name {h.target} vanished")
    return tuple(h for h in hardlinks if h.target in files)


def read_progress(directory: Path) -> dict[str, Any]:
    """The job's ``report_progress`` figures, {} if none (or unreadable)."""
    try:
        doc = json.loads((progress_path(directory)).read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
