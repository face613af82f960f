"""One rank's parts: its own manifests, attempts and timeline in a group job."""

from __future__ import annotations

from ...errors import ObjectNotFound
from ..format.jobstore import JobStore
from ..format.manifest import Manifest
from ..store.base import Store


class RankStore(JobStore):
    """One rank's parts, attempts and timeline under ``<job>/ranks/<r>/``; chunks, pages,
    leases and sweeps are the job's (see :mod:`checkpoint.engine.format.layout`). Never
    hand one to ``gc``: it references this rank's parts only (:func:`.views.collected`
    gives the whole group, every part of which ``gc`` must see).

    During a group restore it can show a *view*: the sequences of the rank's parts that
    group records name, each loading as the manifest to restore (the union of the group's
    parts, or the rank's own). The restore then never sees a part that no record names.
    """

    rank: int

    def __init__(self, store: Store, job_id: str, rank: int) -> None:
        super().__init__(store, job_id, rank)
        self._view: dict[int, Manifest] | None = None

    def show(self, view: dict[int, Manifest] | None) -> None:
        self._view = view

    def sequences(self) -> list[int]:
        if self._view is not None:
            return sorted(self._view)
        return super().sequences()

    @property
    def stores_manifests(self) -> bool:
        return self._view is None  # a view: the group's checkpoints, made of parts

    def load_manifest(self, sequence: int) -> Manifest:
        if self._view is not None:
            try:
                return self._view[sequence]
            except KeyError:
                raise ObjectNotFound(self.manifest_key(sequence)) from None
        return super().load_manifest(sequence)
