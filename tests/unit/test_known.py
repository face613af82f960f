"""What a sync may take as stored (checkpoint.engine.save.known): a view of the base
manifest's chunks and the recent uploads, never a copy, and never changed by a sync."""

from __future__ import annotations

from types import SimpleNamespace

from checkpoint.engine.format.manifest import Chunk, FileEntry, Manifest
from checkpoint.engine.save.known import KnownChunks
from checkpoint.engine.save.located import Located

H = [f"{i:064x}" for i in range(8)]
P = ["a" * 64, "b" * 64, "c" * 64]


def manifest(*chunks: Chunk) -> Manifest:
    files = tuple(FileEntry(f"f{i}", c.size, 0o644, 0, (c,)) for i, c in enumerate(chunks))
    return Manifest("j", 1, 0, "", "t", files, packs={p: 1 << 20 for p in P})


def uploaded(blobs: set[str], packs: dict[str, list[tuple[str, int]]]) -> SimpleNamespace:
    located = Located()
    for p, members in packs.items():
        located.add(p, members)
    return SimpleNamespace(done=blobs, located=located, packs={p: 1 << 20 for p in packs})


def test_the_base_then_the_newest_upload_and_a_repack_changes_neither() -> None:
    known = KnownChunks()
    known.take_base(manifest(Chunk(H[0], 1), Chunk(H[1], 1, P[0], 10)))
    known.record(uploaded({H[2]}, {P[1]: [(H[1], 5), (H[3], 0)]}))  # type: ignore[arg-type]
    known.record(uploaded(set(), {P[2]: [(H[3], 7)]}))  # type: ignore[arg-type]
    stored = known.stored()
    assert H[0] in stored and H[2] in stored and H[4] not in stored
    assert stored.packed[H[1]] == (P[0], 10)  # the base's place wins
    assert stored.packed[H[3]] == (P[2], 7)  # then the newest upload's
    assert sorted(stored.packed) == [H[1], H[3]]
    del stored.packed[H[1]]  # a repack takes it out, for this sync alone
    assert H[1] not in stored.packed and H[1] not in stored
    again = known.stored()
    assert again.packed[H[1]] == (P[0], 10)
    assert stored.locate(Chunk(H[3], 1)) == Chunk(H[3], 1, P[2], 7)


def test_a_commit_and_a_forced_sweep_are_seen_by_the_next_sync_only() -> None:
    known = KnownChunks()
    known.take_base(manifest(Chunk(H[1], 1, P[0], 10)))
    before = known.stored()
    known.record(uploaded({H[2]}, {P[1]: [(H[3], 0)]}))  # type: ignore[arg-type]
    known.take_base(manifest(Chunk(H[1], 1, P[0], 10), Chunk(H[3], 1, P[1], 0)))
    assert H[3] not in before and H[2] not in before  # a view of its own moment
    assert known.stored().packed[H[3]] == (P[1], 0) and H[2] in known.stored()
    known.forget({P[0], H[2]})
    now = known.stored()
    assert H[1] not in now and H[2] not in now and H[3] in now
    assert H[1] in before  # the view a running sync holds is left as it was
