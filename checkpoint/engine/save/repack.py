"""Repacking: a pack the new checkpoint would reference less than half of is rewritten.

A pack stays in the store while any manifest references any of its bytes (``gc`` deletes
only packs no manifest references). When files are deleted or rewritten, their old pack
keeps bytes nobody needs. So before it commits, sync looks at the packs its new manifest
would reference: one referenced less than :data:`SPARSE_BELOW` (by bytes) is *sparse*, and
the small files whose chunks lie in it are read again and packed into this sync's new
packs. Once the older manifests are pruned, nothing references the sparse pack and ``gc``
deletes it. Pack sizes come from the manifests' ``packs`` table (format 3): the chunks
alone do not tell how much of a pack is dead.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog

from checkpoint.errors import CheckpointError

from ..format import hashes
from ..format.manifest import FileEntry, Manifest
from ..localdir.scan import NotRegularFile, hash_file
from .upload import Location, Stored, Uploader

log = structlog.get_logger("checkpoint")

#: A pack of which the new checkpoint would reference less than this share is repacked.
SPARSE_BELOW = 0.5


class Packs:
    """The sizes of the packs this process knows of (from manifests and its own uploads)."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def take_base(self, manifest: Manifest) -> None:
        self.sizes.update(manifest.packs)

    def sparse(self, entries: Iterable[FileEntry], stored: Stored) -> set[str]:
        """Stored packs that ``entries`` would reference less than half of."""
        live: dict[str, set[tuple[int, int]]] = {}
        for entry in entries:
            for c in entry.chunks:
                if c.is_hole or c.digest in stored.blobs:
                    continue  # a blob is where restore will read it from
                at = stored.packed.get(c.digest)
                if at is not None:
                    live.setdefault(at[0], set()).add((at[1], c.size))
        return {
            p
            for p, spans in live.items()
            if p in self.sizes and sum(n for _, n in spans) < SPARSE_BELOW * self.sizes[p]
        }

    def take_out(self, sparse: set[str], stored: Stored) -> dict[str, Location]:
        """Forget the chunks of ``sparse`` packs as stored (so that they are packed again);
        their old places, for files that cannot be read again."""
        moved = {h: at for h, at in stored.packed.items() if at[0] in sparse}
        for h in moved:
            del stored.packed[h]
        return moved

    def table(self, manifest: Manifest) -> dict[str, int]:
        """The ``packs`` table of a new manifest: the size of every pack it references."""
        try:
            return {p: self.sizes[p] for p in sorted(manifest.pack_ids())}
        except KeyError as exc:  # a bug: a chunk placed in a pack we never heard of
            raise CheckpointError(f"pack {exc} of the new checkpoint has no known size") from None


def log_repacked(sparse: set[str], files: int, chunks: int, nbytes: int) -> None:
    log.info(
        "sync.repacked",
        sparse_packs=len(sparse),
        files=files,
        chunks=chunks,
        bytes=nbytes,
        why=f"the new checkpoint references less than {SPARSE_BELOW:.0%} of those packs",
    )


def repack_sparse(
    entries: list[FileEntry],
    uploader: Uploader,
    stored: Stored,
    root: Path,
    packs: Packs,
    *,
    pack_threshold: int,
    chunk_size: int,
) -> dict[str, Location]:
    """Pack again the small files whose chunks lie in sparse packs (``stored`` forgets
    those chunks); the old places of the chunks taken out, which stand in for a file that
    cannot be read again."""
    sparse = packs.sparse(entries, stored) if pack_threshold > 0 else set()
    if not sparse:
        return {}
    moved = packs.take_out(sparse, stored)  # no longer "stored": packed again
    again_files = [
        e for e in entries if e.size < pack_threshold and any(c.digest in moved for c in e.chunks)
    ]
    if uploader.progress is not None:  # read again: counted by the sync's progress
        nbytes_again = sum(c.size for e in again_files for c in e.chunks if not c.is_hole)
        uploader.progress.expect(nbytes_again)
    files = chunks = nbytes = 0
    for e in again_files:
        try:
            # named as they were (sha256 or BLAKE3), so they match the entry's chunks
            like = hashes.identify_like(c.digest for c in e.chunks)
            again, _ = hash_file(root / e.path, chunk_size, uploader.pack, like)
        except (OSError, NotRegularFile):
            continue  # gone or changed since: its old place stands in
        if [(c.digest, c.size) for c in again] == [(c.digest, c.size) for c in e.chunks]:
            files += 1
            chunks += sum(1 for c in e.chunks if c.digest in moved)
            nbytes += sum(c.size for c in e.chunks if c.digest in moved)
    log_repacked(sparse, files, chunks, nbytes)
    return moved
