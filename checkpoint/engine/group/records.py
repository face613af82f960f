"""The group records of one job: a record is written once every rank has committed a
part of one save point, and read to restore (see the package's docstring)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import structlog

from ...errors import ManifestError, ObjectNotFound
from ..format.jobstore import utc_iso
from ..format.layout import NOTICES, RECORDS, Layout, number_of
from ..format.manifest import Manifest
from ..store.base import Store
from .parts import label_of, merge_parts
from .ranks import RankStore

log = structlog.get_logger("checkpoint")

#: how many of a rank's newest parts are read looking for a label
LOOKBACK = 16
#: at most this many bytes in a group record (it names N sequences and one label)
MAX_RECORD_BYTES = 1 << 20


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


class Group:
    """The group records of one job, and the parts of every rank."""

    def __init__(self, store: Store, job_id: str, size: int) -> None:
        self.store = store
        self.job_id = job_id
        self.size = size
        self.ranks = [RankStore(store, job_id, r) for r in range(size)]
        self.keys = Layout(job_id)
        self.prefix = self.keys.group_folder(RECORDS)
        self._parts: dict[tuple[int, int], Manifest] = {}  # manifests are immutable

    def record_key(self, sequence: int) -> str:
        return self.keys.group_record_key(sequence)

    def notices_prefix(self) -> str:
        return self.keys.group_folder(NOTICES)

    # -- records ------------------------------------------------------------------------

    def sequences(self) -> list[int]:
        found = []
        for obj in self.store.list_objects(self.prefix):
            number = number_of(obj.key[len(self.prefix) :])
            if number is not None:
                found.append(number)
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
