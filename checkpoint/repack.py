"""What sync knows about packs: their sizes, and which of the base manifest's are sparse.

A pack stays in the store while any manifest references any of its bytes (``gc`` deletes
only packs no manifest references). When files are deleted or rewritten, their old pack
keeps the bytes nobody needs. So sync repacks: a pack that the base manifest references
less than half of (by bytes) is *sparse*, and the files whose chunks lie in it are packed
again, into the new packs of this sync. Once the older manifests are pruned, nothing
references the sparse pack and ``gc`` deletes it. Pack sizes come from the manifest's
``packs`` table (format 3): the chunks alone do not tell how much of a pack is dead.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from .errors import CheckpointError
from .manifest import Manifest

log = structlog.get_logger("checkpoint")

#: A pack of which the base manifest references less than this share is repacked.
SPARSE_BELOW = 0.5


class Packs:
    """Pack sizes this process knows, and the sparse packs of the base manifest."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}  # pack id -> bytes (from manifests and our uploads)
        self.sparse: frozenset[str] = frozenset()
        self._sparse_chunks: dict[str, int] = {}  # chunk hash -> size, in a sparse pack

    def take_base(self, manifest: Manifest) -> None:
        self.sizes.update(manifest.packs)
        live: dict[str, set[tuple[int, int]]] = {}
        for c in manifest.chunks():
            if c.pack is not None:
                live.setdefault(c.pack, set()).add((c.offset, c.size))
        self.sparse = frozenset(
            p
            for p, spans in live.items()
            if sum(size for _, size in spans) < SPARSE_BELOW * manifest.packs.get(p, 0)
        )
        self._sparse_chunks = {
            c.sha256: c.size
            for c in manifest.chunks()
            if c.pack is not None and c.pack in self.sparse
        }

    def table(self, manifest: Manifest) -> dict[str, int]:
        """The ``packs`` table of a new manifest: the size of every pack it references."""
        try:
            return {p: self.sizes[p] for p in sorted(manifest.pack_ids())}
        except KeyError as exc:  # a bug: a chunk placed in a pack we never heard of
            raise CheckpointError(f"pack {exc} of the new checkpoint has no known size") from None

    def log_repacked(self, located: Mapping[str, object]) -> None:
        """Say what this sync packed again out of sparse packs, if anything."""
        moved = [h for h in located if h in self._sparse_chunks]
        if moved:
            log.info(
                "sync.repacked",
                sparse_packs=len(self.sparse),
                chunks=len(moved),
                bytes=sum(self._sparse_chunks[h] for h in moved),
                why=f"the last checkpoint references less than {SPARSE_BELOW:.0%} of them",
            )
