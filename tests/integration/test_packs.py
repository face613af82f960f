"""Small files packed together (manifest format 3): sync, restore, damage, gc, old formats.

The scenarios that take ``any_store`` run against the local store and SeaweedFS
(tests/stores.py). Requests are counted by wrapping the store, so the counts are the
agent's own, whatever the server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.hashes import FORMAT
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.gc import collect_garbage
from checkpoint.engine.save.upload import PACK_THRESHOLD
from checkpoint.engine.store.base import LocalStore, Store
from checkpoint.errors import CheckpointDamaged
from tests.integration.test_sync import tree
from tests.stores import Counted

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REPO = Path(__file__).resolve().parents[2]
CHUNK = 256 * 1024


def ckpt(store: Store, directory: Path, attempt: int = 1) -> Checkpointer:
    return Checkpointer(JobStore(store, "job"), directory, attempt=attempt, chunk_size=CHUNK)


def small_files(root: Path, n: int, size: int, tag: str = "") -> None:
    for i in range(n):
        d = root / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"s{i}{tag}").write_bytes(os.urandom(size))


def test_small_and_big_files_round_trip_through_packs(tmp_path: Path, any_store: Store) -> None:
    src = tmp_path / "src"
    small_files(src, 300, 3000)
    (src / "big").write_bytes(os.urandom(PACK_THRESHOLD + 5 * CHUNK + 17))  # blobs
    (src / "d1" / "sparse").write_bytes(b"")
    with open(src / "d1" / "sparse", "r+b") as fh:  # a small sparse file: a hole and data
        fh.seek(200_000)
        fh.write(b"tail")
    (src / "d2" / "zero-length").write_bytes(b"")
    (src / "dup-a").write_bytes(b"same bytes")
    (src / "dup-b").write_bytes(b"same bytes")  # one chunk, one place in one pack
    c = ckpt(any_store, src)
    first = c.sync_once("one")
    assert first.sequence == 1 and first.packs_uploaded == 1
    job = JobStore(any_store, "job")
    m1 = job.load_manifest(1)
    packed = [f for f in m1.files if any(ch.pack for ch in f.chunks)]
    assert len(packed) == 300 + 3  # the small files; not the big one
    assert not any(ch.pack for f in m1.files if f.path == "big" for ch in f.chunks)
    assert set(m1.packs) == m1.pack_ids() and len(m1.packs) == 1
    assert b'"format":5' in job.store.get_object(job.manifest_key(1))  # BLAKE3 ids
    snapshot1 = tree(src)

    for i in range(0, 300, 10):  # change some small files, add some, delete some
        (src / f"d{i % 7}" / f"s{i}").write_bytes(os.urandom(2000))
    (src / "d3" / "s3").unlink()
    small_files(src, 20, 5000, tag="new")
    with open(src / "big", "r+b") as fh:
        fh.seek(CHUNK)
        fh.write(b"changed")
    second = c.sync_once("two")
    assert second.sequence == 2 and second.packs_uploaded == 1
    assert second.chunks_uploaded == 30 + 20 + 1  # changed + new small files + 1 big chunk
    m2 = job.load_manifest(2)
    unchanged = m1.files[5]
    assert unchanged in m2.files  # an unchanged file keeps its place in the first pack

    for seq, expect in ((1, snapshot1), (2, tree(src))):
        dst = tmp_path / f"dst{seq}"
        r = ckpt(any_store, dst, attempt=2).restore(seq)
        assert r.manifest is not None and r.manifest.sequence == seq and not r.skipped
        assert tree(dst) == expect
        assert os.stat(dst / "d1" / "sparse").st_blocks * 512 < 200_000  # still sparse
    # Over an older restore: only what differs is fetched; the file deleted since is left
    # alone (restore never deletes) and everything else is exact.
    r = ckpt(any_store, tmp_path / "dst1", attempt=3).restore(2)
    assert r.files_kept > 250 and r.files_written == 51 and r.extra_files == 1
    assert tree(tmp_path / "dst1") == {**tree(src), "d3/s3": snapshot1["d3/s3"]}


def test_a_full_checkpoint_of_small_files_costs_a_request_per_16_mib(
    tmp_path: Path, any_store: Store
) -> None:
    n = 2000
    store = Counted(any_store)
    src = tmp_path / "src"
    small_files(src, n, 16 * 1024)  # 31 MiB: two packs
    r = ckpt(store, src).sync_once("full")
    assert r.packs_uploaded == 2 and r.chunks_uploaded == n
    # 2 pack PUTs, the manifest's put-if-absent, the attempt check, listing the sequences
    assert store.total() <= n // 100 + 5, store.calls
    assert store.calls["put_object"] == 2
    store.clear()
    dst = tmp_path / "dst"
    assert ckpt(store, dst, attempt=2).restore().manifest is not None
    assert tree(dst) == tree(src)
    # 31 MiB in ranged reads of at most ~4 MiB each, plus listing and the manifest
    assert store.calls["get_range"] <= 10 and store.total() <= n // 100 + 5, store.calls


def test_a_damaged_pack_is_detected_and_restore_falls_back_loudly(
    tmp_path: Path, any_store: Store
) -> None:
    src = tmp_path / "src"
    small_files(src, 50, 4000)
    c = ckpt(any_store, src)
    c.sync_once("one")
    for i in range(0, 50, 2):
        (src / f"d{i % 7}" / f"s{i}").write_bytes(os.urandom(4000))
    c.sync_once("two")
    job = JobStore(any_store, "job")
    m2 = job.load_manifest(2)
    new_pack = (m2.pack_ids() - job.load_manifest(1).pack_ids()).pop()
    key = job.pack_key(new_pack)
    data = bytearray(any_store.get_object(key))
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of the new pack
    any_store.put_object(key, bytes(data))
    counted = Counted(any_store)
    dst = tmp_path / "dst"
    with capture_logs() as logs:
        r = ckpt(counted, dst, attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 1
    assert [seq for seq, _ in r.skipped] == [2]
    assert new_pack.startswith("blake3:")  # a new pack, of BLAKE3 chunks, checked as such
    assert all(c.digest.startswith("blake3:") for c in m2.chunks() if c.pack == new_pack)
    assert "do not match their hash" in r.skipped[0][1] and key in r.skipped[0][1]
    events = [e["event"] for e in logs]
    assert "restore.fetch_retry" in events  # read once more before it is called damaged
    assert "restore.checkpoint_damaged" in events
    left = sorted(p.name for p in (dst / ".spot-agent").iterdir())
    assert left == ["index.sqlite"]  # no staging left behind; the index of checkpoint 1
    with pytest.raises(CheckpointDamaged):
        ckpt(any_store, tmp_path / "dst2", attempt=3).restore(2)


def test_a_missing_pack_falls_back_to_the_previous_checkpoint(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "src"
    small_files(src, 5, 100)
    c = ckpt(store, src)
    c.sync_once("one")
    (src / "d0" / "s0").write_bytes(b"new")
    c.sync_once("two")
    job = JobStore(store, "job")
    gone = job.load_manifest(2).pack_ids() - job.load_manifest(1).pack_ids()
    store.delete_objects(job.pack_key(p) for p in gone)
    r = ckpt(store, tmp_path / "dst", attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and len(r.skipped) == 1


SLOW_PACKS = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from checkpoint.engine.store.uri import open_store
    from checkpoint.engine.checkpointer import Checkpointer
    from checkpoint.engine.format.jobstore import JobStore

    store = open_store(sys.argv[1])
    put = store.put_object

    def slow(key, data, *, sha256=None):
        if "/packs/" in key:
            os.write(1, b"packing\\n")
            time.sleep(0.3)
        put(key, data, sha256=sha256)
        if "/packs/" in key:
            os.write(1, b"packed\\n")

    store.put_object = slow
    Checkpointer(JobStore(store, "job"), Path(sys.argv[2]), chunk_size=262144).sync_once("doomed")
    print("committed", flush=True)
    """
)


def test_kill_9_mid_pack_upload_keeps_the_previous_checkpoint(
    tmp_path: Path, any_store: Store
) -> None:
    src = tmp_path / "src"
    (src / "state").parent.mkdir(parents=True)
    (src / "state").write_text("committed")
    ckpt(any_store, src).sync_once("good")
    small_files(src, 48, 1000 * 1000)  # 48 MB of small files: three packs or more
    (src / "state").write_text("uncommitted")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_PACKS, any_store.uri, str(src)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # one pack stored, others still being put
        seen.append(line.strip())
        if seen.count("packed") == 1 and seen.count("packing") >= 2:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "committed" not in seen

    job = JobStore(any_store, "job")
    assert job.sequences() == [1]
    dst = tmp_path / "dst"
    r = ckpt(any_store, dst, attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    assert tree(dst) == {"state": b"committed"}
    dry = collect_garbage(job, min_age=timedelta(0), dry_run=True)
    assert dry.packs_deleted >= 1 and dry.packs_referenced == 1  # the orphans of the kill
    collect_garbage(job, min_age=timedelta(0))
    assert ckpt(any_store, src, attempt=3).sync_once("after").sequence == 2
    dst2 = tmp_path / "dst2"
    ckpt(any_store, dst2, attempt=4).restore()
    assert tree(dst2) == tree(src)


def test_gc_keeps_a_partly_referenced_pack_and_drops_it_after_repack_and_prune(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store")
    job = JobStore(store, "job")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(10_000))
    c = ckpt(store, src)
    c.sync_once("ten files")
    (old_pack,) = job.load_manifest(1).pack_ids()
    for i in range(4):  # 60% of the pack still referenced: not sparse, not repacked
        (src / f"f{i}").unlink()
    with capture_logs() as logs:
        assert c.sync_once("six left").packs_uploaded == 0
    assert "sync.repacked" not in [e["event"] for e in logs]
    assert c.prune(1) == [1]
    g = collect_garbage(job, min_age=timedelta(0))
    assert g.packs_deleted == 0 and g.packs_referenced == 1  # partly referenced: kept whole
    assert store.exists(job.pack_key(old_pack))

    for i in range(4, 7):  # 30% referenced: sparse, its live files are packed again
        (src / f"f{i}").unlink()
    with capture_logs() as logs:
        r = c.sync_once("three left")
    repacked = [e for e in logs if e["event"] == "sync.repacked"]
    assert len(repacked) == 1 and repacked[0]["chunks"] == 3 and repacked[0]["bytes"] == 30_000
    assert r.packs_uploaded == 1 and r.sequence == 3
    assert old_pack not in job.load_manifest(3).pack_ids()
    g = collect_garbage(job, min_age=timedelta(0))  # manifest 2 still references it
    assert g.packs_deleted == 0 and store.exists(job.pack_key(old_pack))
    assert c.prune(1) == [2]
    g = collect_garbage(job, min_age=timedelta(0))
    assert g.packs_deleted == 1 and g.pack_bytes_deleted == 100_000
    assert not store.exists(job.pack_key(old_pack))
    young = collect_garbage(job)  # nothing else unreferenced
    assert young.packs_kept_young == 0 and young.packs == 1
    dst = tmp_path / "dst"
    ckpt(store, dst, attempt=2).restore()
    assert tree(dst) == tree(src)
    assert c.sync_once("nothing changed").sequence is None  # repacking settles


def test_a_stored_format_2_checkpoint_still_restores(tmp_path: Path) -> None:
    store = LocalStore(FIXTURES / "format2_store")
    dst = tmp_path / "dst"
    r = Checkpointer(JobStore(store, "f2job"), dst, attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    assert (dst / "sub" / "a.txt").read_text() == "hello format 2\n"
    assert (dst / "b.bin").read_bytes() == bytes(range(256)) * 12 + b"tail"
    assert (dst / "empty").read_bytes() == b""
    assert os.readlink(dst / "link") == "sub/a.txt"
    assert os.stat(dst / "hard").st_ino == os.stat(dst / "b.bin").st_ino
    assert os.stat(dst / "b.bin").st_mode & 0o777 == 0o640
    assert os.stat(dst / "sub").st_mode & 0o777 == 0o750
    assert os.stat(dst / "b.bin").st_mtime_ns == 1577836800000000000


@pytest.mark.parametrize("fixture,job_id", [("format1_store", "f1job"), ("format2_store", "f2job")])
def test_an_old_format_checkpoint_carries_on_in_format_5(
    tmp_path: Path, fixture: str, job_id: str
) -> None:
    shutil.copytree(FIXTURES / fixture, tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    job = JobStore(store, job_id)
    work = tmp_path / "work"
    c = Checkpointer(job, work, attempt=2, chunk_size=1024)
    assert c.restore().manifest is not None
    old = tree(work)
    (work / "sub" / "new.txt").write_text("written after the upgrade")
    with capture_logs() as logs:
        r = c.sync_once("upgraded")
    assert "restore.blobs_missing_in_store" not in [e["event"] for e in logs]
    assert r.sequence == 2 and r.chunks_uploaded == 1  # old blobs are reused where they are
    assert f'"format":{FORMAT}'.encode() in store.get_object(job.manifest_key(2))
    for seq, expect in ((1, old), (2, tree(work))):
        dst = tmp_path / f"dst{seq}"
        Checkpointer(job, dst, attempt=3).restore(seq)
        assert tree(dst) == expect


def test_the_bytes_in_flight_stay_under_the_bound(tmp_path: Path) -> None:
    class Watching(LocalStore):
        def __init__(self, root: Path) -> None:
            super().__init__(root)
            self.now = self.peak = 0
            self.lock = threading.Lock()

        def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
            with self.lock:
                self.now += len(data)
                self.peak = max(self.peak, self.now)
            time.sleep(0.01)
            super().put_object(key, data, sha256=sha256)
            with self.lock:
                self.now -= len(data)

    store = Watching(tmp_path / "store")
    src = tmp_path / "src"
    small_files(src, 300, 20_000)  # 6 MB packed
    for i in range(8):
        (src / f"big{i}").write_bytes(os.urandom(PACK_THRESHOLD + 1))
    bound = 2 << 20
    c = Checkpointer(JobStore(store, "job"), src, chunk_size=CHUNK, max_bytes_in_flight=bound)
    r = c.sync_once("bounded")
    assert r.sequence == 1 and r.packs_uploaded >= 6  # packs sealed at half the bound
    assert 0 < store.peak <= bound
    dst = tmp_path / "dst"
    ckpt(store, dst, attempt=2).restore()
    assert tree(dst) == tree(src)
