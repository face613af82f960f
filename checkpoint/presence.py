"""Which objects of a job the store holds, in as few requests as the count allows.

A restore that keeps files already in the checkpoint dir has not downloaded their chunks,
so it asks the store whether it still has them (a sync trusts them to be there). One HEAD
per object made a warm restart of 20,000 files cost 20,000 requests; one listing of the
folder holding them costs one request per 1,000 objects.
"""

from __future__ import annotations

from collections.abc import Set
from concurrent.futures import ThreadPoolExecutor

from .jobstore import JobStore

#: this many objects or fewer get a HEAD each: cheaper than listing a big folder
HEAD_AT_MOST = 10
LIST_PAGE = 1000  # keys per page of a listing (S3's maximum, and its default)


def stored_keys(job: JobStore, keys: Set[str], pool: ThreadPoolExecutor) -> set[str]:
    """Which of ``keys`` (keys of ``job``) the store holds.

    A few: a HEAD each, in parallel. More: one listing of each folder that holds them
    (``<job>/blobs/``, ``<job>/packs/``), stopped as soon as every key was seen. When a
    folder turns out to hold many more objects than we look for (old checkpoints' blobs
    that gc has not collected), the listing stops once it has cost more requests than
    HEADs would, and what it has not seen yet gets a HEAD each.
    """
    unseen = set(keys)
    if len(unseen) > HEAD_AT_MOST:
        for folder in sorted({_folder(job.prefix, k) for k in keys}):
            wanted = {k for k in unseen if k.startswith(folder)}
            for listed, obj in enumerate(job.store.list_objects(folder), 1):
                wanted.discard(obj.key)
                unseen.discard(obj.key)
                if not wanted or listed > LIST_PAGE * max(len(wanted), HEAD_AT_MOST):
                    break
    heads = sorted(unseen)
    exists = pool.map(job.store.exists, heads)
    return set(keys) - {k for k, ok in zip(heads, exists, strict=True) if not ok}


def _folder(prefix: str, key: str) -> str:
    """``<job>/blobs/ab/abcd...`` -> ``<job>/blobs/``."""
    return prefix + key[len(prefix) :].split("/", 1)[0] + "/"
