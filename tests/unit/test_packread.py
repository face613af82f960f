"""How restore groups the needed chunks of a pack into ranged reads."""

from __future__ import annotations

from checkpoint.engine.config import DEFAULTS, EngineConfig
from checkpoint.engine.format.manifest import Chunk, FileEntry
from checkpoint.engine.restore.packread import (
    _batches,
    _Piece,
    _ranges,
    packed_files,
)

P = "p" * 64
MIB = 1 << 20


def pieces(*spans: tuple[int, int]) -> list[_Piece]:
    return [
        _Piece(i, 0, Chunk("a" * 64, size, P, offset), f"f{i}")
        for i, (offset, size) in enumerate(spans)
    ]


def groups(batch: list[_Piece]) -> list[list[int]]:
    numbers = sorted(range(len(batch)), key=lambda n: batch[n].chunk.offset)
    return list(_ranges(batch, numbers, DEFAULTS.coalesce_gap, DEFAULTS.max_range))


def test_neighbours_share_a_read_and_a_wide_gap_splits_it() -> None:
    batch = pieces((0, 100), (100, 100), (300, 100), (400 + DEFAULTS.coalesce_gap, 50))
    assert groups(batch) == [[0, 1, 2], [3]]


def test_one_read_is_at_most_about_max_range() -> None:
    batch = pieces(*((i * MIB, MIB) for i in range(10)))
    assert groups(batch) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert DEFAULTS.max_range == 4 * MIB


def test_the_same_bytes_wanted_twice_are_read_once() -> None:
    assert groups(pieces((500, 10), (500, 10), (0, 10))) == [[2, 0, 1]]


def test_files_with_a_packed_chunk_go_to_the_pack_reader_and_holes_are_not_read() -> None:
    files = [
        FileEntry("blob", 3, 0o644, 0, (Chunk("b" * 64, 3),)),
        FileEntry("packed", 13, 0o644, 0, (Chunk("", 10), Chunk("a" * 64, 3, P, 7))),
    ]
    assert packed_files(files) == [1]
    (batch,) = _batches(files, [1], DEFAULTS.pack_batch_bytes)
    assert [(p.index, p.at, p.chunk.offset) for p in batch] == [(1, 10, 7)]


def test_a_batch_ends_at_the_limit_the_downloader_gives() -> None:
    files = [FileEntry(f"f{i}", 10, 0o644, 0, (Chunk("a" * 64, 10, P, 10 * i),)) for i in range(5)]
    sizes = [[p.index for p in b] for b in _batches(files, list(range(5)), 20)]
    assert sizes == [[0, 1], [2, 3], [4]]


def test_two_batches_of_packed_files_fit_in_the_bytes_in_flight() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from checkpoint.engine.format.jobstore import JobStore
    from checkpoint.engine.restore.download import Downloader
    from checkpoint.engine.store.base import LocalStore

    with ThreadPoolExecutor(1) as pool:
        job = JobStore(LocalStore.__new__(LocalStore), "j")
        small = Downloader(job, pool, config=EngineConfig(max_bytes_in_flight=8 * MIB))
        assert 2 * small._pack_batch_bytes() <= 8 * MIB
        big = Downloader(job, pool, config=EngineConfig(max_bytes_in_flight=512 * MIB))
        assert big._pack_batch_bytes() == DEFAULTS.pack_batch_bytes
