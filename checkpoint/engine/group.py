"""A group: N agents, one per node, sharing one job id, that commit one save point or none.

Layout of a group job under the store's root::

    <job-id>/blobs/, <job-id>/packs/          every rank's chunks, content-addressed and shared
                                              (same name, same bytes: ranks never disagree)
    <job-id>/pages/                           every rank's manifest pages, content-addressed
    <job-id>/ranks/<r>/manifests/<seq>.json   rank r's parts: its own commit protocol, its own
    <job-id>/ranks/<r>/attempts/<n>.json      attempt fence (ranks never fence each other)
    <job-id>/ranks/<r>/timeline/<n>.json      what rank r's attempt n did
    <job-id>/leases/<r>-<n>.json              rank r's attempt n is running: one folder for
                                              every rank, so gc and delete see each live node
    <job-id>/sweeps/                          a forced gc or delete, seen by every rank
    <job-id>/group/checkpoints/<seq>.json     one per group checkpoint, written last
    <job-id>/group/notices/<r>-<n>.json       an interruption rank r's attempt n saw

How the ranks agree on "the same save point": the job labels each save (the training
step, say: ``checkpoint.saving(label=step)``). The label is read with the save under the
save-point lock and kept in the part's manifest (``progress["save_label"]``). After each
commit a rank looks for a part labelled the same in every other rank; when all are there it
writes the group record naming each rank's sequence, create-only under the next group
sequence. Of any two ranks committing label L, the one whose look comes later sees both
parts, so a record is written once all parts exist (a rank killed between its commit and
its look is covered by the others' looks, unless it was the last; the next save writes a
newer record). Two writers of the same record race on one key: the loser reads the winner's.

A record is refused when two ranks' parts hold one path with different contents (a file
here, a directory there, two different files): the restore of the union would not be
well defined. Identical copies are allowed (a rank that restored the union carries the
others' files unchanged).

Restore reads the newest group record and restores its parts only: the union of every
rank's part (as on a shared filesystem), or the rank's own. A part that is not in a record
is never restored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import structlog

from ..errors import ManifestError, ObjectNotFound
from ..savelabel import LABEL_KEY
from .format.jobstore import ATTEMPTS, MANIFESTS, RANKS, TIMELINE, JobStore, utc_iso
from .format.manifest import DirEntry, FileEntry, HardLinkEntry, LinkEntry, Manifest
from .store.base import Store

log = structlog.get_logger("checkpoint")

#: how many of a rank's newest parts are read looking for a label
LOOKBACK = 16
#: at most this many bytes in a group record (it names N sequences and one label)
MAX_RECORD_BYTES = 1 << 20
_NUMBERED = re.compile(r"([0-9]{1,18})\.json")


def group_prefix(job_id: str) -> str:
    return f"{job_id}/group/"


def rank_job_id(job_id: str, rank: int) -> str:
    return f"{job_id}/{RANKS}/{rank}"


def label_of(manifest: Manifest) -> str | None:
    label = manifest.progress.get(LABEL_KEY)
    return label if isinstance(label, str) and label else None


#: the folders that are each rank's own (numbered per rank); the rest stay the job's
RANK_FOLDERS = frozenset({MANIFESTS, ATTEMPTS, TIMELINE})


class RankStore(JobStore):
    """One rank's parts, attempts and timeline under ``<job>/ranks/<r>/``; chunks and pages
    under ``<job>/``.

    ``prefix`` stays the job's (blobs, packs, pages and their listings are shared; so are
    the leases, named per rank, and the sweeps); only the numbered folders move. Never hand
    one to ``gc``: it references this rank's parts only (:func:`collected` gives the whole
    group, every part of which ``gc`` must see).

    During a group restore it can show a *view*: the sequences of the rank's parts that
    group records name, each loading as the manifest to restore (the union of the group's
    parts, or the rank's own). The restore then never sees a part that no record names.
    """

    def __init__(self, store: Store, job_id: str, rank: int) -> None:
        super().__init__(store, job_id)
        self.rank = rank
        self.rank_prefix = f"{rank_job_id(job_id, rank)}/"
        self._view: dict[int, Manifest] | None = None

    def folder(self, kind: str) -> str:
        return f"{self.rank_prefix}{kind}/" if kind in RANK_FOLDERS else super().folder(kind)

    def lease_key(self, attempt: int) -> str:
        """In the job's one lease folder: ``gc`` and ``delete`` of the job see every rank."""
        return f"{self.lease_folder}{self.rank}-{attempt:06d}.json"

    def show(self, view: dict[int, Manifest] | None) -> None:
        self._view = view

    def sequences(self) -> list[int]:
        if self._view is not None:
            return sorted(self._view)
        return super().sequences()

    def load_manifest(self, sequence: int) -> Manifest:
        if self._view is not None:
            try:
                return self._view[sequence]
            except KeyError:
                raise ObjectNotFound(self.manifest_key(sequence)) from None
        return super().load_manifest(sequence)


@dataclass(frozen=True)
class GroupRecord:
    """A group checkpoint: one save point (``label``) committed by every rank."""

    sequence: int
    label: str
    size: int
    parts: tuple[int, ...]  # parts[r]: rank r's manifest sequence
    created: str = ""
    writer: int = 0

    def to_json(self) -> bytes:
        doc = {
            "sequence": self.sequence,
            "label": self.label,
            "size": self.size,
            "parts": {str(r): seq for r, seq in enumerate(self.parts)},
            "created": self.created,
            "writer": self.writer,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> GroupRecord:
        try:
            doc = json.loads(data)
            size = int(doc["size"])
            parts = doc["parts"]
            if not isinstance(parts, dict) or sorted(parts) != sorted(str(r) for r in range(size)):
                raise ValueError(f"parts must name ranks 0..{size - 1}")
            label = doc["label"]
            if not isinstance(label, str) or not label:
                raise ValueError("label must be a non-empty string")
            return cls(
                sequence=int(doc["sequence"]),
                label=label,
                size=size,
                parts=tuple(int(parts[str(r)]) for r in range(size)),
                created=str(doc.get("created", "")),
                writer=int(doc.get("writer", 0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"{where}: not a group record ({exc})") from None


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
        return ("file", entry.size, entry.mode, tuple((c.sha256, c.size) for c in entry.chunks))
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


class Group:
    """The group records of one job, and the parts of every rank."""

    def __init__(self, store: Store, job_id: str, size: int) -> None:
        self.store = store
        self.job_id = job_id
        self.size = size
        self.ranks = [RankStore(store, job_id, r) for r in range(size)]
        self.prefix = f"{group_prefix(job_id)}checkpoints/"
        self._parts: dict[tuple[int, int], Manifest] = {}  # manifests are immutable

    def record_key(self, sequence: int) -> str:
        return f"{self.prefix}{sequence:010d}.json"

    def notices_prefix(self) -> str:
        return f"{group_prefix(self.job_id)}notices/"

    # -- records ------------------------------------------------------------------------

    def sequences(self) -> list[int]:
        found = []
        for obj in self.store.list_objects(self.prefix):
            match = _NUMBERED.fullmatch(obj.key[len(self.prefix) :])
            if match:
                found.append(int(match[1]))
        return sorted(found)

    def load_record(self, sequence: int) -> GroupRecord:
        key = self.record_key(sequence)
        record = GroupRecord.from_json(self.store.get_object(key, max_bytes=MAX_RECORD_BYTES), key)
        if record.sequence != sequence or record.size != self.size:
            raise ManifestError(
                f"{key}: a record of sequence {record.sequence} for {record.size} ranks, "
                f"not {sequence} for {self.size}"
            )
        return record

    def records(self, newest_first: bool = True) -> Iterator[GroupRecord]:
        """The readable records (an unreadable one is logged and passed over)."""
        seqs = self.sequences()
        for seq in reversed(seqs) if newest_first else seqs:
            try:
                yield self.load_record(seq)
            except (ManifestError, ObjectNotFound) as exc:
                log.error("group.record_unreadable", sequence=seq, error=str(exc))

    def part(self, rank: int, sequence: int) -> Manifest:
        key = (rank, sequence)
        if key not in self._parts:
            self._parts[key] = self.ranks[rank].load_manifest(sequence)
        return self._parts[key]

    # -- completing a group checkpoint ---------------------------------------------------

    def find_part(self, rank: int, label: str) -> int | None:
        """The newest of ``rank``'s parts labelled ``label`` (among its newest few)."""
        for seq in self.ranks[rank].sequences()[::-1][:LOOKBACK]:
            try:
                if label_of(self.part(rank, seq)) == label:
                    return seq
            except (ManifestError, ObjectNotFound):
                continue
        return None

    def complete(self, label: str, *, writer: int) -> GroupRecord | None:
        """Write the record of ``label`` if every rank has committed a part of it (and no
        record names it yet). Returns the record, or None while a part is missing.
        Raises :class:`PathConflict` when the parts cannot be one tree."""
        existing = self.record_for(label)
        if existing is not None:
            return existing
        parts: list[int] = []
        for rank in range(self.size):
            seq = self.find_part(rank, label)
            if seq is None:
                return None
            parts.append(seq)
        merge_parts((self.part(r, s) for r, s in enumerate(parts)), label, self.part(0, parts[0]))
        for _ in range(10):
            newest = next(self.records(), None)
            later = newest is not None and all(
                n >= p for n, p in zip(newest.parts, parts, strict=True)
            )
            if later:  # a later save point is recorded already: never record an older one
                return None
            seq = (self.sequences() or [0])[-1] + 1
            record = GroupRecord(seq, label, self.size, tuple(parts), utc_iso(), writer)
            if self.store.put_object_if_absent(self.record_key(seq), record.to_json()):
                return record
            existing = self.record_for(label)  # another rank wrote it (or another label)
            if existing is not None:
                return existing
        return None

    def record_for(self, label: str) -> GroupRecord | None:
        for record in self.records():
            if record.label == label:
                return record
            break  # records are written in save order: an older one is not looked for
        return None

    # -- restoring ----------------------------------------------------------------------

    def restore_view(self, rank: int, own_only: bool) -> dict[int, Manifest]:
        """For each record, rank's part's sequence -> the manifest to restore: the union of
        the record's parts (or the rank's own). Records whose parts cannot be read are left
        out (logged), so the restore falls back to the one before."""
        view: dict[int, Manifest] = {}
        for record in self.records(newest_first=False):
            try:
                own = self.part(rank, record.parts[rank])
                if own_only:
                    view[own.sequence] = own
                    continue
                parts = [self.part(r, s) for r, s in enumerate(record.parts)]
                view[own.sequence] = merge_parts(parts, record.label, own)
            except (ManifestError, ObjectNotFound) as exc:
                log.error(
                    "group.record_unrestorable",
                    sequence=record.sequence,
                    label=record.label,
                    error=str(exc),
                )
        return view

    def referenced(self, rank: int, newest: int = 2) -> set[int]:
        """Rank's parts named by the newest records: never pruned."""
        out: set[int] = set()
        for i, record in enumerate(self.records()):
            if i >= newest:
                break
            out.add(record.parts[rank])
        return out


_PART_KEY = re.compile(r"ranks/([0-9]{1,9})/manifests/([0-9]{1,18})\.json")


class AllParts(JobStore):
    """A group job seen by ``gc``: its chunks are shared, so every rank's parts (and any
    manifest of the job's own, from before it ran as a group) reference them. Numbers
    them 1..n in one listing; ``load_manifest(n)`` loads the n-th."""

    def __init__(self, store: Store, job_id: str) -> None:
        super().__init__(store, job_id)
        self._plain = JobStore(store, job_id)
        self._index: list[tuple[int | None, int]] = []

    def sequences(self) -> list[int]:
        index: list[tuple[int | None, int]] = [(None, s) for s in self._plain.sequences()]
        ranks = f"{self.prefix}ranks/"
        for obj in self.store.list_objects(ranks):
            match = _PART_KEY.fullmatch(obj.key[len(self.prefix) :])
            if match:
                index.append((int(match[1]), int(match[2])))
        self._index = index
        return list(range(1, len(index) + 1))

    def _holder(self, sequence: int) -> tuple[JobStore, int]:
        rank, seq = self._index[sequence - 1]
        if rank is None:
            return self._plain, seq
        return RankStore(self.store, self.job_id, rank), seq

    def load_manifest(self, sequence: int) -> Manifest:
        job, seq = self._holder(sequence)
        return job.load_manifest(seq)

    def references(self, sequence: int, seen_pages: set[str]) -> tuple[set[str], set[str]]:
        """As :meth:`JobStore.references`: a rank's paged part names pages in the job's one
        ``pages/`` folder, so pages count as references across ranks, as chunks do."""
        job, seq = self._holder(sequence)
        return job.references(seq, seen_pages)


def is_group_job(store: Store, job_id: str) -> bool:
    return next(iter(store.list_objects(f"{job_id}/ranks/")), None) is not None


def collected(job: JobStore) -> JobStore:
    """What ``gc`` must look at for ``job``: every part of a group job, else ``job``."""
    if isinstance(job, (RankStore, AllParts)):
        return job if isinstance(job, AllParts) else AllParts(job.store, job.job_id)
    return AllParts(job.store, job.job_id) if is_group_job(job.store, job.job_id) else job


def group_size(store: Store, job_id: str) -> int:
    """How many ranks a group job has stored parts for (0: not a group job)."""
    ranks = -1
    prefix = f"{job_id}/ranks/"
    for obj in store.list_objects(prefix):
        head = obj.key[len(prefix) :].split("/", 1)[0]
        if head.isascii() and head.isdigit():
            ranks = max(ranks, int(head))
    return ranks + 1


class GroupCheckpointsView(JobStore):
    """A group job as ``checkpoints show`` and ``checkpoints restore`` see it: checkpoint n
    is group checkpoint n, the union of the parts its record names (every rank's files)."""

    def __init__(self, store: Store, job_id: str, size: int) -> None:
        super().__init__(store, job_id)
        self.group = Group(store, job_id, size)

    def sequences(self) -> list[int]:
        return self.group.sequences()

    def load_manifest(self, sequence: int) -> Manifest:
        record = self.group.load_record(sequence)
        parts = [self.group.part(r, s) for r, s in enumerate(record.parts)]
        union = merge_parts(parts, record.label, parts[0])
        return replace(union, sequence=sequence, job_id=self.job_id)
