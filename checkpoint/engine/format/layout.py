"""Every key of a job in a store, named once (as restic's ``backend/layout``).

Layout of one job under the store's root::

    <job-id>/blobs/<h[:2]>/<h>         chunk contents, named by their sha256 (immutable);
                                       blake3-<h> for a BLAKE3 id (format 5, .hashes)
    <job-id>/packs/<p[:2]>/<p>         small files' chunks back to back, named by the hash
                                       of the whole pack (immutable; manifest format 3),
                                       blake3-<p> since format 5
    <job-id>/manifests/<seq>.json      one per committed checkpoint (10-digit sequence): the
                                       whole manifest, or the root of a paged one (format 4)
    <job-id>/pages/<h[:2]>/<h>         a page of paged manifests, named by its sha256
                                       (immutable, shared by every manifest that has it)
    <job-id>/attempts/<n>.json         one per agent start: the fencing token
    <job-id>/timeline/<n>.json         what attempt n did (where it ran, its restore, syncs,
                                       notice and end), rewritten as it goes: for
                                       ``checkpoints timeline``; never read by a restore
    <job-id>/leases/<n>.json           attempt n is running: rewritten while it runs, deleted
                                       when it exits (checkpoint.engine.lease)
    <job-id>/sweeps/<time>-<id>.json   a forced gc or delete of the job (checkpoint.engine.lease)

A multi-node group (checkpoint.engine.group) shares the chunks, pages, leases and sweeps
of its job; what each rank numbers on its own moves under its rank::

    <job-id>/ranks/<r>/manifests/, attempts/, timeline/    rank r's parts, fence, timeline
    <job-id>/leases/<r>-<n>.json                           rank r's attempt n is running
    <job-id>/group/checkpoints/<seq>.json                  one per group checkpoint
    <job-id>/group/notices/<r>-<n>.json                    an interruption rank r's attempt
                                                           n saw
"""

from __future__ import annotations

import re

from . import hashes
from .manifest import Chunk

#: the folders of one job in a store; KINDS is also the order a job is deleted in:
#: manifests first, so no reader finds a checkpoint whose blobs are already gone
MANIFESTS, PAGES, BLOBS, PACKS = "manifests", "pages", "blobs", "packs"
ATTEMPTS, TIMELINE, LEASES, SWEEPS = "attempts", "timeline", "leases", "sweeps"
#: a group job's: its records, and each rank's own folders; records go first, then the
#: ranks' parts, so no reader finds a record whose parts are gone
GROUP, RANKS = "group", "ranks"
KINDS = (GROUP, MANIFESTS, RANKS, PAGES, BLOBS, PACKS, ATTEMPTS, TIMELINE, LEASES)
#: the folders that are each rank's own (numbered per rank); the rest stay the job's
RANK_FOLDERS = frozenset({MANIFESTS, ATTEMPTS, TIMELINE})
#: inside ``group/``: the group checkpoints' records, the interruptions ranks saw
RECORDS, NOTICES = "checkpoints", "notices"

#: a numbered object's name. ASCII digits only: str.isdigit() also takes '²', which int()
#: then refuses.
NUMBERED = re.compile(r"([0-9]{1,18})\.json")
_PART = re.compile(rf"{RANKS}/([0-9]{{1,9}})/{MANIFESTS}/{NUMBERED.pattern}")


class Layout:
    """The keys of one job; with ``rank``, of that rank of a group job."""

    def __init__(self, job_id: str, rank: int | None = None) -> None:
        self.job_id = job_id
        self.rank = rank
        self.prefix = f"{job_id}/"

    def folder(self, kind: str) -> str:
        """The prefix of one of the job's folders (one of :data:`KINDS`), with its slash; a
        rank's own for :data:`RANK_FOLDERS`."""
        if self.rank is not None and kind in RANK_FOLDERS:
            return f"{self.rank_prefix(self.rank)}{kind}/"
        return f"{self.prefix}{kind}/"

    def blob_key(self, digest: str) -> str:
        return f"{self.folder(BLOBS)}{hashes.fan_out(digest)}/{hashes.object_name(digest)}"

    def pack_key(self, pack: str) -> str:
        return f"{self.folder(PACKS)}{hashes.fan_out(pack)}/{hashes.object_name(pack)}"

    def chunk_key(self, chunk: Chunk) -> str:
        """The object holding ``chunk``'s bytes: its pack, or its own blob."""
        return self.pack_key(chunk.pack) if chunk.pack is not None else self.blob_key(chunk.digest)

    def manifest_key(self, sequence: int) -> str:
        return f"{self.folder(MANIFESTS)}{sequence:010d}.json"

    def page_key(self, page: str) -> str:
        return f"{self.folder(PAGES)}{page[:2]}/{page}"

    def attempt_key(self, attempt: int) -> str:
        return f"{self.folder(ATTEMPTS)}{attempt:06d}.json"

    def record_key(self, attempt: int) -> str:
        return f"{self.folder(TIMELINE)}{attempt:06d}.json"

    @property
    def lease_folder(self) -> str:
        return self.folder(LEASES)

    def lease_key(self, attempt: int) -> str:
        """One lease folder for every rank: ``gc`` and ``delete`` of the job see each."""
        name = f"{attempt:06d}" if self.rank is None else f"{self.rank}-{attempt:06d}"
        return f"{self.lease_folder}{name}.json"

    @property
    def sweep_folder(self) -> str:
        return self.folder(SWEEPS)

    def sweep_key(self, name: str) -> str:
        return f"{self.sweep_folder}{name}.json"

    # -- a group job ----------------------------------------------------------------------

    def rank_prefix(self, rank: int) -> str:
        return f"{self.folder(RANKS)}{rank}/"

    def group_folder(self, kind: str) -> str:
        """The prefix of :data:`RECORDS` or :data:`NOTICES`, with its slash."""
        return f"{self.folder(GROUP)}{kind}/"

    def group_record_key(self, sequence: int) -> str:
        return f"{self.group_folder(RECORDS)}{sequence:010d}.json"

    def notices_of(self, rank: int) -> str:
        """The prefix of the notices of ``rank``'s attempts."""
        return f"{self.group_folder(NOTICES)}{rank}-"

    def notice_key(self, rank: int, attempt: int) -> str:
        return f"{self.notices_of(rank)}{attempt}.json"

    def part_of(self, key: str) -> tuple[int, int] | None:
        """(rank, sequence) of a key of a rank's manifest; None for any other key."""
        match = _PART.fullmatch(key[len(self.prefix) :]) if key.startswith(self.prefix) else None
        return (int(match[1]), int(match[2])) if match else None


def number_of(name: str) -> int | None:
    """The number of a numbered object's name (``0000000012.json``); None for another."""
    match = NUMBERED.fullmatch(name)
    return int(match[1]) if match else None
