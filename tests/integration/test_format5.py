"""Format 5 (issue 23): new data named by BLAKE3, the data of older checkpoints keeping its
sha256, both in one manifest; sparse packs repacked across the change; gc of both kinds;
and what an agent that reads formats 1 to 4 (or 1 to 3) does with a newer checkpoint.

An older agent's checkpoint is made by today's sync with its hash set back to sha256
(:func:`named_by_sha256`): the bytes formats 3 and 4 store are unchanged. An older agent's
reader is today's loader with the format check it had (:func:`reader_of`): the formats it
reads and the head it takes for a paged root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format import hashes, paged, whole
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.gc import collect_garbage, prune_manifests
from checkpoint.engine.store.base import LocalStore
from checkpoint.errors import ManifestError
from tests.integration.test_paged_manifest import files_of

CHUNK = 64 * 1024
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
#: what an agent of formats 1 to 4 takes for a paged root (paged._ROOT_HEAD before format 5)
FORMAT4_ROOT_HEAD = re.compile(rb'\s*\{\s*"format"\s*:\s*4\s*[,}]')


@contextlib.contextmanager
def named_by_sha256() -> Iterator[None]:
    """Syncs name new chunks and packs by sha256, as agents of formats 1 to 4 did."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hashes, "new_id", hashes.sha256_id)
        yield


@contextlib.contextmanager
def reader_of(last: int) -> Iterator[None]:
    """The format check of an agent that reads formats 1 to ``last`` (3 or 4): the whole
    formats 1 to 3, and a paged root only if it reads 4 and the head says 4."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(whole, "READABLE_FORMATS", (1, 2, 3))
        mp.setattr(
            paged, "is_paged", lambda data: last >= 4 and bool(FORMAT4_ROOT_HEAD.match(data[:256]))
        )
        yield


def restored(job: JobStore, into: Path, seq: int | None = None) -> dict[str, bytes]:
    """The files a restore of checkpoint ``seq`` (None: the newest) puts in ``into``."""
    c = Checkpointer(job, into)
    try:
        assert c.restore(seq).manifest is not None
    finally:
        c.close()
    return files_of(into)


def stored_format(job: JobStore, seq: int) -> int:
    fmt = json.loads(job.store.get_object(job.manifest_key(seq)))["format"]
    assert isinstance(fmt, int)
    return fmt


def two_checkpoints(tmp_path: Path, paged_above: int) -> tuple[JobStore, dict[str, bytes], Path]:
    """Checkpoint 1 by an agent of sha256 (format 3, or 4 with ``paged_above=0``): 20 small
        files in one pack and a big file in blobs. Checkpoint 2 by this agent: 15 small files
        rewritten (the old pack is sparse: its 5 other files are packed again), one added, a
        second big file, after a restore (the upgraded agent's next attempt). Returns the job,
    the tree of checkpoint 1, the dir (tree 2)."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"s{i:02d}").write_bytes(os.urandom(3000))
    (src / "big-old").write_bytes(os.urandom(3 * CHUNK + 17))
    for p in src.iterdir():  # older than the racy window: the stat cache vouches for them
        os.utime(p, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    job = JobStore(LocalStore(tmp_path / "store"), "job")
    with named_by_sha256():
        c = Checkpointer(job, src, chunk_size=CHUNK, pack_threshold=CHUNK, paged_above=paged_above)
        try:
            assert c.sync_once("old agent").sequence == 1
        finally:
            c.close()
    first = files_of(src)
    c = Checkpointer(job, src, chunk_size=CHUNK, pack_threshold=CHUNK, paged_above=paged_above)
    try:
        assert c.restore().manifest is not None  # the upgraded agent's next attempt
        for i in range(15):
            (src / f"s{i:02d}").write_bytes(os.urandom(3000))
        (src / "added").write_bytes(b"written after the upgrade")
        (src / "big-new").write_bytes(os.urandom(2 * CHUNK + 5))
        with capture_logs() as logs:
            assert c.sync_once("new agent").sequence == 2
    finally:
        c.close()
    assert "sync.repacked" in [e["event"] for e in logs]
    return job, first, src


@pytest.mark.parametrize("paged_above", [2048, 0], ids=["whole", "paged"])
def test_a_manifest_of_both_hashes_restores_byte_for_byte(tmp_path: Path, paged_above: int) -> None:
    job, first, src = two_checkpoints(tmp_path, paged_above)
    assert (stored_format(job, 1), stored_format(job, 2)) == ((3, 5) if paged_above else (4, 5))
    m1, m2 = job.load_manifest(1), job.load_manifest(2)
    assert not hashes.any_blake3(c.digest for c in m1.chunks()) and not hashes.any_blake3(m1.packs)
    by_path = {f.path: f for f in m2.files}
    assert by_path["big-old"].chunks == next(f for f in m1.files if f.path == "big-old").chunks
    assert all(hashes.is_blake3(c.digest) for c in by_path["big-new"].chunks)
    assert all(hashes.is_blake3(c.digest) for c in by_path["s00"].chunks)
    # the sparse sha256 pack's live files, read again: their sha256 ids, in a BLAKE3 pack
    kept = [by_path[f"s{i}"].chunks[0] for i in range(15, 20)]
    assert all(not hashes.is_blake3(c.digest) for c in kept)
    assert all(c.pack is not None and hashes.is_blake3(c.pack) for c in kept)
    assert set(m2.packs) == {kept[0].pack}  # the old pack is referenced no more
    for d in m2.stored_blobs():  # blobs of both kinds, each under its own name
        assert job.store.exists(job.blob_key(d))
    names = {job.blob_key(d).rsplit("/", 1)[1] for d in m2.stored_blobs()}
    assert any(n.startswith("blake3-") for n in names) and any(len(n) == 64 for n in names)

    for seq, expect in ((1, first), (2, files_of(src))):
        assert restored(job, tmp_path / f"restored-{seq}", seq) == expect


def test_a_warm_restart_and_a_sync_carry_a_mixed_manifest_on(tmp_path: Path) -> None:
    """A restore into a dir that holds the checkpoint keeps its files (checked against
    both kinds of id, or vouched for by the local index, which packs both), and a sync
    with nothing changed uploads nothing (the stat cache holds both kinds)."""
    job, _first, src = two_checkpoints(tmp_path, 0)
    into = tmp_path / "restored"
    for _ in range(2):
        c = Checkpointer(job, into, chunk_size=CHUNK, pack_threshold=CHUNK, paged_above=0)
        try:
            restored = c.restore()
            assert restored.manifest is not None and restored.manifest.sequence == 2
            again = c.sync_once("no change")
        finally:
            c.close()
        assert again.sequence is None or again.chunks_uploaded == 0
    # the second restore found every file in place and checked each against its chunks
    # ids (sha256 and BLAKE3 alike) or vouched for by the index, fetching none
    assert restored.files_kept == len(restored.manifest.files) == 23
    assert restored.bytes_downloaded == 0 and restored.files_written == 0
    assert files_of(into) == files_of(src)


def test_a_file_read_again_keeps_the_sha256_ids_of_the_bytes_that_did_not_change(
    tmp_path: Path,
) -> None:
    """A full re-read after the upgrade (``rehash``, as the final sync does for files the
    job had open for writing) uploads nothing for bytes already stored under sha256: each
    chunk is checked against the file's old ids first. A chunk that changed is BLAKE3."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(4 * CHUNK))
    (src / "small").write_bytes(os.urandom(3000))
    for p in src.iterdir():
        os.utime(p, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    job = JobStore(LocalStore(tmp_path / "store"), "job")
    with named_by_sha256():
        c = Checkpointer(job, src, chunk_size=CHUNK, pack_threshold=CHUNK)
        try:
            assert c.sync_once("old agent").sequence == 1
        finally:
            c.close()
    c = Checkpointer(job, src, chunk_size=CHUNK, pack_threshold=CHUNK)
    try:
        assert c.restore().manifest is not None
        again = c.sync_once("re-read", rehash=lambda st: True)
        assert again.sequence is None or again.chunks_uploaded == 0
        with open(src / "big", "r+b") as fh:  # one chunk of four changes, its stat too
            fh.seek(CHUNK)
            fh.write(os.urandom(100))
        changed = c.sync_once("one chunk changed", rehash=lambda st: True)
    finally:
        c.close()
    assert changed.sequence is not None and changed.chunks_uploaded == 1
    m = job.load_manifest(changed.sequence)
    (big,) = [f for f in m.files if f.path == "big"]
    assert [hashes.is_blake3(ch.digest) for ch in big.chunks] == [False, True, False, False]
    assert stored_format(job, changed.sequence) == 5
    assert restored(job, tmp_path / "restored") == files_of(src)


def test_gc_keeps_both_kinds_while_referenced(tmp_path: Path) -> None:
    job, _first, src = two_checkpoints(tmp_path, 0)
    store = job.store

    def keys(folder: str) -> set[str]:
        return {o.key for o in store.list_objects(job.folder(folder))}

    before = (keys("blobs"), keys("packs"), keys("pages"))
    result = collect_garbage(job, min_age=timedelta(0))
    assert (result.deleted, result.packs_deleted, result.pages_deleted) == (0, 0, 0)
    assert (keys("blobs"), keys("packs"), keys("pages")) == before

    assert prune_manifests(job, 1) == [1]
    result = collect_garbage(job, min_age=timedelta(0))
    m2 = job.load_manifest(2)
    assert keys("blobs") == {job.blob_key(d) for d in m2.stored_blobs()}
    assert keys("packs") == {job.pack_key(p) for p in m2.pack_ids()}
    assert keys("pages") == {job.page_key(p) for p in m2.pages}
    kinds = {hashes.is_blake3(d) for d in m2.stored_blobs()}
    assert kinds == {True, False}  # an old sha256 blob and a new BLAKE3 one both kept
    assert result.packs_deleted == 1  # the sparse sha256 pack, now referenced by nothing
    assert result.deleted == 0  # no big file changed: each old blob is still referenced
    assert restored(job, tmp_path / "restored") == files_of(src)


@pytest.mark.parametrize("paged_above", [2048, 0], ids=["whole", "paged"])
def test_an_agent_that_reads_formats_1_to_4_refuses_format_5_and_falls_back(
    tmp_path: Path, paged_above: int
) -> None:
    job, first, _src = two_checkpoints(tmp_path, paged_above)
    with reader_of(4):
        with pytest.raises(ManifestError, match=r"unsupported format 5\b"):
            job.load_manifest(2)
        into = tmp_path / "older"
        c = Checkpointer(job, into)
        try:
            with capture_logs() as logs:
                restored = c.restore()
        finally:
            c.close()
    assert restored.manifest is not None and restored.manifest.sequence == 1
    assert [seq for seq, _ in restored.skipped] == [2]
    assert "unsupported format 5" in restored.skipped[0][1]
    damaged = [e for e in logs if e["event"] == "restore.checkpoint_damaged"]
    assert damaged and "unsupported format 5" in str(damaged[0])
    assert files_of(into) == first


def test_an_agent_that_reads_formats_1_to_3_refuses_a_format_4_root(tmp_path: Path) -> None:
    job, _first, _src = two_checkpoints(tmp_path, 0)
    assert stored_format(job, 1) == 4
    with reader_of(3), pytest.raises(ManifestError, match=r"unsupported format 4\b"):
        job.load_manifest(1)
    with reader_of(4):
        assert job.load_manifest(1).sequence == 1  # the reader of 4 takes it as before


# -- a stored format-5 checkpoint, kept as a fixture: later agents must restore it -------

#: the trees of tests/fixtures/format5_store's checkpoints 1 (format 3, sha256), 2 (format
#: 5 whole: one chunk of big.bin and sub/b.txt changed) and 3 (format 5 paged: c.txt added)
BIG = bytes(range(256)) * 256  # 64 KiB: four chunks of 16 KiB
FIXTURE_TREES = {
    1: {"a.txt": b"alpha\n" * 10, "big.bin": BIG, "sub/b.txt": b"beta v1\n"},
    2: {
        "a.txt": b"alpha\n" * 10,
        "big.bin": BIG[: 1 << 14] + b"x" * (1 << 14) + BIG[2 << 14 :],
        "sub/b.txt": b"beta v2\n",
    },
}
FIXTURE_TREES[3] = {**FIXTURE_TREES[2], "sub/c.txt": b"gamma\n"}


def make_format5_store(root: Path, work: Path) -> None:
    """How tests/fixtures/format5_store was made (``root``: the store's dir)."""
    job = JobStore(LocalStore(root), "f5job")
    for seq, tree in FIXTURE_TREES.items():
        with contextlib.ExitStack() as stack:
            if seq == 1:
                stack.enter_context(named_by_sha256())
            paged_above = 2048 if seq < 3 else 0
            c = Checkpointer(
                job, work, chunk_size=1 << 14, pack_threshold=1 << 15, paged_above=paged_above
            )
            stack.callback(c.close)
            if seq > 1:
                c.restore(seq - 1)  # the dir as the agent that made it left it
            for rel, data in tree.items():
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                (work / rel).write_bytes(data)
                os.utime(work / rel, ns=(1_600_000_000 * 10**9 + seq,) * 2)
            assert c.sync_once(f"fixture {seq}").sequence == seq


def test_the_format_5_fixture_restores_byte_for_byte(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    shutil.copytree(FIXTURES / "format5_store", store.root)
    job = JobStore(store, "f5job")
    assert [stored_format(job, seq) for seq in (1, 2, 3)] == [3, 5, 5]
    assert paged.is_paged(store.get_object(job.manifest_key(3)))
    for seq, tree in FIXTURE_TREES.items():
        assert restored(job, tmp_path / f"restored-{seq}", seq) == tree
    big = next(f for f in job.load_manifest(3).files if f.path == "big.bin")
    assert [hashes.is_blake3(c.digest) for c in big.chunks] == [False, True, False, False]
