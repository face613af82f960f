"""Garbage collection: delete blobs, packs and manifest pages that no checkpoint references.

A blob, a pack or a page (format 4) is deleted only when both hold:

1. no manifest of the job references it (for a pack: no chunk of any manifest lies in
   it; a pack of which any byte is still referenced is kept whole), and
2. it is older than ``min_age`` (default 24 h).

A pack that is mostly unreferenced is not rewritten here: sync repacks the live files of
such a pack into its new packs (:mod:`checkpoint.engine.save.repack`), so once the manifests that
still reference the old pack are pruned, rule 1 holds for it and it is deleted.

Rule 2 protects a running agent: a sync uploads its blobs before its manifest exists,
and an agent also skips uploading blobs it put within the last hour
(``UPLOAD_TRUST_SECONDS``) whether or not a manifest references them yet (the uploads of a
sync that failed or was overtaken). So ``min_age`` must exceed that hour while any agent of
the job may be running; the CLI refuses less unless told that none is. Blobs are listed
*before* manifests, so a manifest committed during the listing can only reference blobs
that are young (rule 2) or referenced by a manifest we do see. A manifest that cannot be
read stops the collection: nothing is deleted on a guess.

Partial objects that a writer killed mid-put left behind (the local store's temp files;
an S3 PUT is atomic and leaves none) are deleted by the same age rule: no object ever
refers to them, and a put still running is younger than ``min_age``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..errors import CheckpointError, ManifestError, ObjectNotFound
from .format.hashes import id_of_name
from .format.jobstore import JobStore
from .format.layout import BLOBS, PACKS, PAGES
from .group import collected
from .store.base import ObjectInfo

DEFAULT_MIN_AGE = timedelta(hours=24)


@dataclass(frozen=True)
class GcResult:
    manifests: int
    blobs: int
    referenced: int
    deleted: int
    bytes_deleted: int
    kept_young: int
    dry_run: bool
    incomplete_deleted: int = 0  # partial objects of killed puts
    packs: int = 0  # pack objects found
    packs_referenced: int = 0
    packs_deleted: int = 0
    pack_bytes_deleted: int = 0
    packs_kept_young: int = 0  # unreferenced, younger than min_age
    pages: int = 0  # manifest pages found (format 4)
    pages_referenced: int = 0
    pages_deleted: int = 0


def prune_manifests(
    job: JobStore, keep: int, *, protected: Iterable[int] = (), newest_good: int | None = None
) -> list[int]:
    """Delete all but the ``keep`` newest manifests, and never the newest one that loads.

    When the newest manifests are damaged, the newest readable one behind them is the
    checkpoint a restore would fall back to: ``keep`` must not make it unreachable.
    ``protected`` sequences are never deleted either, nor ``job.pinned`` ones.
    ``newest_good``, when the caller knows it (it just committed it), saves reading
    manifests to find it.
    Returns the deleted sequences.
    """
    sequences = job.sequences()
    if keep < 1 or len(sequences) <= keep:
        return []
    spared = set(protected) | set(sequences[-keep:]) | job.pinned
    newer = [seq for seq in sequences if newest_good is None or seq >= newest_good]
    if newest_good is not None:
        spared.add(newest_good)
    for seq in reversed(newer):
        if seq == newest_good:
            break
        try:
            job.load_manifest(seq)
        except (ManifestError, ObjectNotFound):
            continue
        spared.add(seq)
        break
    old = [seq for seq in sequences if seq not in spared]
    job.store.delete_objects(job.manifest_key(seq) for seq in old)
    return old


def collect_garbage(
    job: JobStore,
    *,
    min_age: timedelta = DEFAULT_MIN_AGE,
    dry_run: bool = False,
    now: datetime | None = None,
) -> GcResult:
    now = now or datetime.now(UTC)
    job = collected(job)  # a group's chunks are shared: every rank's parts reference them
    for _ in range(3):
        blobs = list(job.store.list_objects(job.folder(BLOBS)))
        packs = list(job.store.list_objects(job.folder(PACKS)))
        pages = list(job.store.list_objects(job.folder(PAGES)))
        sequences = job.sequences()
        try:
            referenced: set[str] = set()
            referenced_packs: set[str] = set()
            referenced_pages: set[str] = set()  # each page shared by checkpoints read once
            for seq in sequences:
                blobs_of, packs_of = job.references(seq, referenced_pages)
                referenced |= blobs_of
                referenced_packs |= packs_of
            break
        except ObjectNotFound:
            continue  # a manifest was pruned while we read: list everything again
        except ManifestError as exc:
            raise CheckpointError(
                f"gc stopped, nothing deleted: {exc}. Restore an older checkpoint or delete "
                "that manifest first"
            ) from None
    else:
        raise CheckpointError("gc stopped, nothing deleted: the manifests kept changing")

    b = _Unreferenced.of(blobs, referenced, now - min_age)
    p = _Unreferenced.of(packs, referenced_packs, now - min_age)
    g = _Unreferenced.of(pages, referenced_pages, now - min_age)
    partial = [p for p in job.store.list_incomplete(job.prefix) if now - p.modified >= min_age]
    if not dry_run:
        for doomed in (b.old, p.old, g.old, partial):
            job.store.delete_objects(o.key for o in doomed)
    return GcResult(
        manifests=len(sequences),
        blobs=len(blobs),
        referenced=len(blobs) - len(b.dead),
        deleted=len(b.old),
        bytes_deleted=b.bytes_old,
        kept_young=len(b.dead) - len(b.old),
        dry_run=dry_run,
        incomplete_deleted=len(partial),
        packs=len(packs),
        packs_referenced=len(packs) - len(p.dead),
        packs_deleted=len(p.old),
        pack_bytes_deleted=p.bytes_old,
        packs_kept_young=len(p.dead) - len(p.old),
        pages=len(pages),
        pages_referenced=len(pages) - len(g.dead),
        pages_deleted=len(g.old),
    )


@dataclass(frozen=True)
class _Unreferenced:
    """Of one folder's objects: those no manifest references, and of them those older than
    ``min_age`` (rule 2), which are deleted."""

    dead: list[ObjectInfo]
    old: list[ObjectInfo]

    @classmethod
    def of(cls, found: list[ObjectInfo], referenced: set[str], before: datetime) -> _Unreferenced:
        dead = [o for o in found if id_of_name(o.key.rsplit("/", 1)[-1]) not in referenced]
        return cls(dead, [o for o in dead if o.modified <= before])

    @property
    def bytes_old(self) -> int:
        return sum(o.size for o in self.old)
