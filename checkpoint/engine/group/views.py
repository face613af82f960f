"""A group job as ``gc`` and the ``checkpoints`` commands see it: every rank's parts (the
chunks they share), and the group checkpoints as the checkpoints of the job."""

from __future__ import annotations

from dataclasses import replace

from ..format.jobstore import JobStore
from ..format.layout import RANKS, Layout
from ..format.manifest import Manifest
from ..store.base import Store
from .parts import merge_parts
from .ranks import RankStore
from .records import Group


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
        for obj in self.store.list_objects(self.folder(RANKS)):
            part = self.part_of(obj.key)
            if part is not None:
                index.append(part)
        self._index = index
        return list(range(1, len(index) + 1))

    def _holder(self, sequence: int) -> tuple[JobStore, int]:
        rank, seq = self._index[sequence - 1]
        if rank is None:
            return self._plain, seq
        return RankStore(self.store, self.job_id, rank), seq

    @property
    def stores_manifests(self) -> bool:
        return False  # checkpoint n is some rank's part, at that rank's own number

    def load_manifest(self, sequence: int) -> Manifest:
        job, seq = self._holder(sequence)
        return job.load_manifest(seq)

    def references(self, sequence: int, seen_pages: set[str]) -> tuple[set[str], set[str]]:
        """As :meth:`JobStore.references`: a rank's paged part names pages in the job's one
        ``pages/`` folder, so pages count as references across ranks, as chunks do."""
        job, seq = self._holder(sequence)
        return job.references(seq, seen_pages)


def is_group_job(store: Store, job_id: str) -> bool:
    return next(iter(store.list_objects(Layout(job_id).folder(RANKS))), None) is not None


def collected(job: JobStore) -> JobStore:
    """What ``gc`` must look at for ``job``: every part of a group job, else ``job``."""
    if isinstance(job, (RankStore, AllParts)):
        return job if isinstance(job, AllParts) else AllParts(job.store, job.job_id)
    return AllParts(job.store, job.job_id) if is_group_job(job.store, job.job_id) else job


def group_size(store: Store, job_id: str) -> int:
    """How many ranks a group job has stored parts for (0: not a group job)."""
    ranks = -1
    prefix = Layout(job_id).folder(RANKS)
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

    @property
    def stores_manifests(self) -> bool:
        return False  # checkpoint n is the union of the parts its record names

    def load_manifest(self, sequence: int) -> Manifest:
        record = self.group.load_record(sequence)
        parts = [self.group.part(r, s) for r, s in enumerate(record.parts)]
        union = merge_parts(parts, record.label, parts[0])
        return replace(union, sequence=sequence, job_id=self.job_id)
