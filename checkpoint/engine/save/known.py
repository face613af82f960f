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
from collections.abc import Container, Iterator, Mapping, MutableMapping, Set
from itertools import chain

from ..format.manifest import Chunk, Manifest
from .repack import Packs
from .upload import Location, Stored, Uploader

#: A chunk this process uploaded is trusted to still be in the store for this long.
UPLOAD_TRUST_SECONDS = 3600.0


class _Batch:
    """What one uploader put in the store, and when: its own sets, not a copy per chunk."""

    __slots__ = ("at", "blobs", "packed")

    def __init__(self, at: float, blobs: Set[str], packed: Mapping[str, Location]) -> None:
        self.at = at  # monotonic time of the record
        self.blobs = blobs
        self.packed = packed


class _Blobs(Set[str]):
    """The blobs a sync may skip: the base's and the batches', looked up where they are
    (a merged copy is ~60 bytes a chunk, every sync)."""

    def __init__(self, layers: list[Set[str]]) -> None:
        self._layers = layers

    def __contains__(self, h: object) -> bool:
        return any(h in layer for layer in self._layers)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for layer in self._layers:
            for h in layer:
                if h not in seen:
                    seen.add(h)
                    yield h

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Packed(MutableMapping[str, Location]):
    """Packed chunks a sync may skip, and where: the base manifest's own chunk objects
    (no tuple a chunk), then the batches', newest first; a repack takes some out for this
    sync alone (:meth:`__delitem__`), never from the layers themselves."""

    def __init__(self, base: dict[str, Chunk], batches: list[Mapping[str, Location]]) -> None:
        self._base = base
        self._batches = batches
        self._out: set[str] = set()

    def __getitem__(self, h: str) -> Location:
        if h not in self._out:
            c = self._base.get(h)
            if c is not None:
                assert c.pack is not None  # only packed chunks are in it
                return c.pack, c.offset
            for batch in self._batches:
                at = batch.get(h)
                if at is not None:
                    return at
        raise KeyError(h)

    def __contains__(self, h: object) -> bool:
        if h in self._out:
            return False
        return h in self._base or any(h in batch for batch in self._batches)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for h in chain(self._base, *self._batches):
            if h not in seen and h not in self._out:
                seen.add(h)
                yield h

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, h: str, at: Location) -> None:
        raise TypeError("what is stored is recorded by KnownChunks.record, not set")

    def __delitem__(self, h: str) -> None:
        if h not in self:
            raise KeyError(h)
        self._out.add(h)


class KnownChunks:
    def __init__(self) -> None:
        self.packs = Packs()
        #: chunks the base manifest references: blobs, and packed chunks by hash (the
        #: manifest's own chunk objects, which carry their place)
        self._blobs: set[str] = set()
        self._packed: dict[str, Chunk] = {}
        self._uploaded: list[_Batch] = []  # what this process put, batch by batch

    def stored(self) -> Stored:
        """The chunks a sync may skip now: the base manifest's, and our recent uploads.
        A view of them as they are now, not a copy: each is replaced, never changed in
        place, when a later sync records or commits."""
        cutoff = time.monotonic() - UPLOAD_TRUST_SECONDS
        # A copy of the list first: a sync thread may be adding to it while the main
        # thread asks. The newest place of a chunk put twice wins, after the base's.
        uploaded = [b for b in reversed(self._uploaded.copy()) if b.at >= cutoff]
        layers = [self._blobs, *(b.blobs for b in uploaded if b.blobs)]
        blobs = layers[0] if len(layers) == 1 else _Blobs(layers)  # most syncs: the base's
        return Stored(blobs, _Packed(self._packed, [b.packed for b in uploaded if b.packed]))

    def take_base(self, manifest: Manifest, present: Container[str] | None = None) -> None:
        """``manifest`` is committed (or restored): its chunks (those in ``present``, when
        a restore found only some of them in the store) are the base from now on."""
        self.packs.take_base(manifest)
        blobs: set[str] = set()
        packed: dict[str, Chunk] = {}
        for c in manifest.chunks():
            if c.is_hole or (present is not None and c.digest not in present):
                continue
            if c.pack is None:
                blobs.add(c.digest)
            else:
                packed.setdefault(c.digest, c)
        self._blobs, self._packed = blobs, packed
        # What the base holds at the same place, the batches need not also hold (the base
        # wins in stored()): after a full upload, a second map of every chunk for an hour.
        kept = []
        for b in self._uploaded.copy():
            b.blobs = b.blobs - blobs
            b.packed = {h: at for h, at in b.packed.items() if _place(packed.get(h)) != at}
            if b.blobs or b.packed:
                kept.append(b)
        self._uploaded = kept

    def forget(self, gone: set[str]) -> None:
        """Objects (blob hashes, pack ids) found gone from the store (an operator's forced
        ``gc`` or ``delete``): no chunk stored in them is known any more, so the next sync
        uploads what it needs of them again."""
        self._blobs = self._blobs - gone
        self._packed = {h: c for h, c in self._packed.items() if c.pack not in gone}
        self._uploaded = [
            _Batch(
                b.at,
                b.blobs - gone,
                {h: at for h, at in b.packed.items() if at[0] not in gone},
            )
            for b in self._uploaded.copy()
        ]

    def record(self, uploader: Uploader) -> None:
        """What ``uploader`` did put in the store, whether or not its sync commits: its own
        sets, not copies (it is done with them)."""
        now = time.monotonic()
        cutoff = now - UPLOAD_TRUST_SECONDS
        kept = [b for b in self._uploaded if b.at >= cutoff]
        self._uploaded = [*kept, _Batch(now, uploader.done, uploader.located)]
        self.packs.sizes.update(uploader.packs)


def _place(c: Chunk | None) -> Location | None:
    return None if c is None or c.pack is None else (c.pack, c.offset)
