"""What a sync may take as already stored, and where: the one place that decides it.

A chunk is skipped by a sync (not uploaded again) only when it is known to be in the store:

1. it is referenced by the newest committed manifest this process knows (its base), at
   the place that manifest gives (a blob, or a pack and an offset); ``gc`` never deletes
   what a manifest references;
2. or this process uploaded it itself less than :data:`UPLOAD_TRUST_SECONDS` ago (the
   uploads of a sync that failed or was overtaken, which no manifest references yet).
   ``gc`` deletes only objects older than its ``--min-age`` (24 h by default), and the CLI
   refuses a ``--min-age`` below this hour while an agent of the job may run.

It also keeps the sizes of the packs this process has heard of (:class:`Packs`), which a
new manifest's ``packs`` table and the repack decision need.
"""

from __future__ import annotations

import time

from ..format.manifest import Manifest
from .repack import Packs
from .upload import Location, Stored, Uploader

#: A chunk this process uploaded is trusted to still be in the store for this long.
UPLOAD_TRUST_SECONDS = 3600.0


class _Batch:
    """What one uploader put in the store, and when: its own sets, not a copy per chunk."""

    __slots__ = ("at", "blobs", "packed")

    def __init__(self, at: float, blobs: set[str], packed: dict[str, Location]) -> None:
        self.at = at  # monotonic time of the record
        self.blobs = blobs
        self.packed = packed


class KnownChunks:
    def __init__(self) -> None:
        self.packs = Packs()
        self._base = Stored()  # chunks the base manifest references, and where
        self._uploaded: list[_Batch] = []  # what this process put, batch by batch

    def stored(self) -> Stored:
        """The chunks a sync may skip now: the base manifest's, and our recent uploads."""
        cutoff = time.monotonic() - UPLOAD_TRUST_SECONDS
        # A copy first: a sync thread may be adding to it while the main thread asks.
        uploaded = [b for b in self._uploaded.copy() if b.at >= cutoff]
        blobs = set(self._base.blobs)
        packed = dict(self._base.packed)
        for batch in reversed(uploaded):  # the newest place of a chunk put twice
            blobs |= batch.blobs
            for h, at in batch.packed.items():
                packed.setdefault(h, at)
        return Stored(blobs, packed)

    def take_base(self, manifest: Manifest, present: set[str] | None = None) -> None:
        """``manifest`` is committed (or restored): its chunks (those in ``present``, when
        a restore found only some of them in the store) are the base from now on."""
        self.packs.take_base(manifest)
        blobs: set[str] = set()
        packed: dict[str, Location] = {}
        for c in manifest.chunks():
            if c.is_hole or (present is not None and c.digest not in present):
                continue
            if c.pack is None:
                blobs.add(c.digest)
            else:
                packed.setdefault(c.digest, (c.pack, c.offset))
        self._base = Stored(blobs, packed)
        # What the base holds at the same place, the batches need not also hold (the base
        # wins in stored()): after a full upload, a second map of every chunk for an hour.
        for b in self._uploaded.copy():
            b.blobs = b.blobs - blobs
            b.packed = {h: at for h, at in b.packed.items() if packed.get(h) != at}

    def forget(self, gone: set[str]) -> None:
        """Objects (blob hashes, pack ids) found gone from the store (an operator's forced
        ``gc`` or ``delete``): no chunk stored in them is known any more, so the next sync
        uploads what it needs of them again."""
        base = self._base
        self._base = Stored(
            base.blobs - gone, {h: at for h, at in base.packed.items() if at[0] not in gone}
        )
        self._uploaded = [
            _Batch(
                b.at,
                b.blobs - gone,
                {h: at for h, at in b.packed.items() if at[0] not in gone},
            )
            for b in self._uploaded.copy()
        ]

    def record(self, uploader: Uploader) -> None:
        """What ``uploader`` did put in the store, whether or not its sync commits."""
        now = time.monotonic()
        located = dict(uploader.located)  # chunks in packs; the others are blobs
        blobs = {h for h in uploader.done if h not in located}
        cutoff = now - UPLOAD_TRUST_SECONDS
        kept = [b for b in self._uploaded if b.at >= cutoff]
        self._uploaded = [*kept, _Batch(now, blobs, located)]
        self.packs.sizes.update(uploader.packs)
