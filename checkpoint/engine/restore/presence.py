"""Which objects of a job the store holds, in as few requests as the count allows.

A restore that keeps files already in the checkpoint dir has not downloaded their chunks,
so it asks the store whether it still has them (a sync trusts them to be there). One HEAD
per object made a warm restart of 20,000 files cost 20,000 requests; one listing of the
folder holding them costs one request per 1,000 objects.
"""

from __future__ import annotations

from collections.abc import Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from ..config import DEFAULTS
from ..format.jobstore import JobStore
from ..format.manifest import FileEntry

log = structlog.get_logger("checkpoint")

#: this many objects or fewer get a HEAD each: cheaper than listing a big folder
HEAD_AT_MOST = 10


@dataclass
class Listing:
    seen: set[str] = field(default_factory=set)  # keys the listing met (of those looked for)
    complete: set[str] = field(default_factory=set)  # folders listed to their end


def list_folders(job: JobStore, keys: Set[str], *, list_page: int = DEFAULTS.list_page) -> Listing:
    """One listing of each folder that holds ``keys`` (``<job>/blobs/``, ``<job>/packs/``),
    a request per 1,000 objects, stopped as soon as every key was seen.

    When a folder turns out to hold many more objects than we look for (old checkpoints'
    blobs that gc has not collected yet), its listing stops once the pages of objects we
    do not look for outnumber the keys still unseen: the caller HEADs those one by one.
    ``list_page``: keys per page of the store's listing (what one request costs).
    """
    out = Listing()
    for folder in sorted({_folder(job.prefix, k) for k in keys}):
        wanted = {k for k in keys if k.startswith(folder)}
        others = 0  # objects listed that we do not look for
        for obj in job.store.list_objects(folder):
            if obj.key in wanted:
                wanted.discard(obj.key)
                out.seen.add(obj.key)
                if not wanted:
                    break
            else:
                others += 1
                if others > list_page * max(len(wanted), HEAD_AT_MOST):
                    break
        else:
            out.complete.add(folder)
    return out


def stored_keys(
    job: JobStore, keys: Set[str], pool: ThreadPoolExecutor, listing: Listing | None = None
) -> set[str]:
    """Which of ``keys`` the store holds. A few: a HEAD each, in parallel; more: one listing
    (or ``listing``, made before for a superset of ``keys``), then a HEAD for each key a
    listing that stopped early has not met."""
    if listing is None and len(keys) > HEAD_AT_MOST:
        listing = list_folders(job, keys)
    if listing is None:
        listing = Listing()
    found = {k for k in keys if k in listing.seen}
    heads = sorted(k for k in keys - found if _folder(job.prefix, k) not in listing.complete)
    exists = pool.map(job.store.exists, heads)
    return found | {k for k, ok in zip(heads, exists, strict=True) if ok}


def _folder(prefix: str, key: str) -> str:
    """``<job>/blobs/ab/abcd...`` -> ``<job>/blobs/``."""
    return prefix + key[len(prefix) :].split("/", 1)[0] + "/"


def verify_present(job: JobStore, kept: list[FileEntry], pool: ThreadPoolExecutor) -> set[str]:
    """Kept files were not downloaded: which of their blobs does the store still have?

    The objects to look for (a pack's key once, however many chunks it holds) are named a
    second time to sort the chunks, rather than kept in a map of every chunk."""
    key = job.chunk_key
    found = stored_keys(job, {key(c) for f in kept for c in f.chunks if not c.is_hole}, pool)
    present: set[str] = set()
    missing: set[str] = set()
    for f in kept:
        for c in f.chunks:
            if not c.is_hole:
                (present if key(c) in found else missing).add(c.digest)
    missing -= present  # a chunk stored twice, in a pack that is gone and one that is not
    if missing:
        # The local copy is intact, so the job loses nothing: the next sync uploads them.
        log.warning(
            "restore.blobs_missing_in_store",
            count=len(missing),
            action="they will be uploaded again by the next sync",
        )
    return present
