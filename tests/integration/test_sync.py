"""Sync and restore: incremental, manifest-last, safe.

The scenarios that take ``any_store`` run against both kinds of store (a local directory and
SeaweedFS's S3 gateway, tests/stores.py); the rest use a local store, wrapped to count or
refuse puts, or its ``file://`` layout. S3-only cases are in test_sync_s3.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.hashes import new_id
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.format.manifest import Manifest
from checkpoint.engine.gc import collect_garbage
from checkpoint.engine.save.upload import PACK_THRESHOLD
from checkpoint.engine.store.base import LocalStore, Store
from checkpoint.errors import CheckpointDamaged, Superseded
from tests.stores import Counted

REPO = Path(__file__).resolve().parents[2]

CHUNK = 64 * 1024


def tree(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(".spot-agent"):
            continue
        if p.is_symlink():
            out[rel] = b"->" + os.readlink(p).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


class CountingStore(LocalStore):
    """A local store that counts puts, and can fail after a number of them."""

    def __init__(self, root: Path, fail_after: int | None = None) -> None:
        super().__init__(root)
        self.puts: list[str] = []
        self.fail_after = fail_after

    def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        if self.fail_after is not None and len(self.puts) >= self.fail_after:
            raise OSError("injected failure")
        self.puts.append(key)
        super().put_object(key, data, sha256=sha256)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def ckpt(
    store: Store,
    directory: Path,
    attempt: int = 1,
    job: str = "job",
    pack_threshold: int = PACK_THRESHOLD,
) -> Checkpointer:
    """``pack_threshold=0``: every chunk a blob of its own (tests of the blob path)."""
    return Checkpointer(
        JobStore(store, job),
        directory,
        attempt=attempt,
        chunk_size=CHUNK,
        pack_threshold=pack_threshold,
    )


def test_first_sync_then_restore_round_trips(tmp_path: Path, any_store: Store) -> None:
    store = any_store
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(3 * CHUNK + 17))
    (src / "sub" / "deep" / "empty").write_bytes(b"")
    (src / "emptydir").mkdir()
    (src / "link").symlink_to("sub/b.bin")
    os.chmod(src / "a.txt", 0o640)
    r = ckpt(store, src).sync_once("test")
    assert r.sequence == 1 and r.files == 3
    dst = tmp_path / "dst"
    res = ckpt(store, dst, attempt=2).restore()
    assert res.manifest is not None and res.manifest.sequence == 1
    assert tree(dst) == tree(src)
    assert (dst / "emptydir").is_dir()
    assert (dst / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (dst / "a.txt").stat().st_mtime_ns == (src / "a.txt").stat().st_mtime_ns


def test_second_sync_uploads_only_what_changed(tmp_path: Path, any_store: Store) -> None:
    store = Counted(any_store)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        (src / f"f{i}").write_bytes(os.urandom(CHUNK // 2))
    big = src / "big.log"
    big.write_bytes(os.urandom(8 * CHUNK))
    c = ckpt(store, src)
    first = c.sync_once("one")
    assert first.sequence == 1
    assert first.bytes_uploaded == first.bytes_total == 10 * (CHUNK // 2) + 8 * CHUNK
    store.clear()
    (src / "f3").write_bytes(os.urandom(CHUNK // 2))  # one small file rewritten
    with open(big, "ab") as fh:  # the large file grows by one and a half chunks
        fh.write(os.urandom(CHUNK + CHUNK // 2))
    r = c.sync_once("two")
    packs = [k for k in store.puts if "/packs/" in k]
    # f3 (1 chunk) + the big file's tail: the old last chunk is unchanged, 2 new chunks,
    # all three in one pack (both files are under the pack threshold).
    assert len(packs) == 1 and r.chunks_uploaded == 3 and r.packs_uploaded == 1
    assert r.bytes_uploaded == CHUNK // 2 + CHUNK + CHUNK // 2
    assert r.sequence == 2
    others = [k for k in store.puts if "/manifests/" not in k and "/packs/" not in k]
    assert others == []
    dst = tmp_path / "dst"
    restored = ckpt(any_store, dst, attempt=2).restore()
    assert restored.manifest is not None and restored.manifest.sequence == 2
    assert tree(dst) == tree(src)


def test_unchanged_dir_commits_nothing(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_text("x")
    c = ckpt(store, src)
    assert c.sync_once("one").sequence == 1
    store.puts.clear()
    r = c.sync_once("two")
    assert r.sequence is None and r.bytes_uploaded == 0 and store.puts == []


def test_stat_cache_skips_rehashing_old_files(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "old"
    f.write_bytes(os.urandom(CHUNK))
    os.utime(f, (time.time() - 3600, time.time() - 3600))
    c = ckpt(store, src)
    assert c.sync_once("one").bytes_hashed == CHUNK
    (src / "new").write_text("n")
    r = c.sync_once("two")
    assert r.bytes_hashed == 1  # only the new file was read


def test_same_size_rewrite_within_timestamp_granularity_is_seen(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "state"
    f.write_bytes(b"AAAA")
    c = ckpt(store, src)
    c.sync_once("one")
    st = f.stat()
    f.write_bytes(b"BBBB")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: a racy write
    assert c.sync_once("two").sequence == 2
    dst = tmp_path / "dst"
    ckpt(store, dst).restore()
    assert (dst / "state").read_bytes() == b"BBBB"


def test_failed_upload_commits_nothing_and_previous_restores(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"first")
    c = ckpt(store, src, pack_threshold=0)
    c.sync_once("one")
    for i in range(20):
        (src / f"n{i}").write_bytes(os.urandom(100))
    (src / "a").write_bytes(b"second")
    store.fail_after = len(store.puts) + 5
    with pytest.raises(OSError, match="injected"):
        c.sync_once("two")
    assert JobStore(store, "job").sequences() == [1]
    dst = tmp_path / "dst"
    ckpt(store, dst).restore()
    assert tree(dst) == {"a": b"first"}
    store.fail_after = None
    assert c.sync_once("three").sequence == 2  # the next sync completes what was left


def test_damaged_blob_falls_back_to_previous_checkpoint(tmp_path: Path, any_store: Store) -> None:
    store = any_store
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"version one")
    c = ckpt(store, src, pack_threshold=0)  # a blob; test_packs damages a pack
    c.sync_once("one")
    (src / "a").write_bytes(b"version two")
    c.sync_once("two")
    digest = new_id(b"version two")  # a BLAKE3 blob, checked as such
    assert JobStore(store, "job").load_manifest(2).files[0].chunks[0].digest == digest
    store.put_object(JobStore(store, "job").blob_key(digest), b"version 2wo")  # bit rot
    dst = tmp_path / "dst"
    res = ckpt(store, dst).restore()
    assert res.manifest is not None and res.manifest.sequence == 1
    assert [s for s, _ in res.skipped] == [2]
    assert "does not match its hash" in res.skipped[0][1]
    assert (dst / "a").read_bytes() == b"version one"
    # no staging dir left behind; the restore's local index (engine.localdir.localindex) stays
    assert {p.name for p in (dst / ".spot-agent").glob("*")} <= {"index.sqlite"}
    with pytest.raises(CheckpointDamaged):
        ckpt(store, tmp_path / "dst2").restore(2)


def test_missing_blob_and_corrupt_manifest_fall_back(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    c = ckpt(store, src, pack_threshold=0)
    for i in range(3):
        (src / "a").write_bytes(f"v{i}".encode())
        c.sync_once(str(i))
    man = tmp_path / "store" / "job" / "manifests"
    (man / "0000000003.json").write_bytes(b'{"format": 1, "files": [')  # truncated
    (tmp_path / "store" / JobStore(store, "job").blob_key(new_id(b"v1"))).unlink()
    res = ckpt(store, tmp_path / "dst").restore()
    assert res.manifest is not None and res.manifest.sequence == 1
    assert [s for s, _ in res.skipped] == [3, 2]
    assert (tmp_path / "dst" / "a").read_bytes() == b"v0"


def forge(store: Store, seq: int, files: list[dict], links: list[dict] | None = None) -> None:
    doc = {
        "format": 1,
        "job_id": "job",
        "sequence": seq,
        "attempt": 1,
        "created": "x",
        "reason": "forged",
        "files": files,
        "links": links or [],
        "dirs": [],
    }
    store.put_object(f"job/manifests/{seq:010d}.json", json.dumps(doc).encode())


@pytest.mark.parametrize(
    "files, links",
    [
        ([{"path": "../escape", "size": 0, "mode": 420, "mtime_ns": 1, "chunks": []}], None),
        ([{"path": "/tmp/escape", "size": 0, "mode": 420, "mtime_ns": 1, "chunks": []}], None),
        ([], [{"path": "l", "target": "/etc"}]),
        ([], [{"path": "l", "target": "../../x"}]),
        (
            [{"path": "l/x", "size": 0, "mode": 420, "mtime_ns": 1, "chunks": []}],
            [{"path": "l", "target": "d"}],
        ),
    ],
)
def test_forged_manifests_never_write_outside(
    tmp_path: Path, store: CountingStore, files: list[dict], links: list[dict] | None
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_text("ok")
    ckpt(store, src).sync_once("good")
    forge(store, 2, files, links)
    dst = tmp_path / "work" / "dst"
    res = ckpt(store, dst).restore()
    assert res.manifest is not None and res.manifest.sequence == 1
    assert [s for s, _ in res.skipped] == [2]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["dst"]
    assert not (tmp_path / "escape").exists()
    assert tree(dst) == {"ok": b"ok"}


def test_restore_does_not_follow_a_planted_symlink(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "src"
    (src / "out").mkdir(parents=True)
    (src / "out" / "result").write_text("data")
    ckpt(store, src).sync_once("one")
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "out").symlink_to(outside)  # something left a link where the checkpoint has a dir
    ckpt(store, dst).restore()
    assert list(outside.iterdir()) == []
    assert (dst / "out").is_dir() and not (dst / "out").is_symlink()
    assert (dst / "out" / "result").read_text() == "data"


def test_unsafe_symlinks_in_the_dir_are_not_checkpointed(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "passwd").symlink_to("/etc/passwd")
    (src / "up").symlink_to("../x")
    (src / "fine").symlink_to("target")
    r = ckpt(store, src).sync_once("one")
    m = JobStore(store, "job").load_manifest(r.sequence or 0)
    assert [lk.path for lk in m.links] == ["fine"]


def test_restore_keeps_matching_files_and_reports_extras(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(CHUNK * 2))
    (src / "b").write_text("b")
    ckpt(store, src).sync_once("one")
    (src / "b").write_text("changed locally, never committed")
    (src / "stray").write_text("s")
    res = ckpt(store, src).restore()
    assert (res.files_kept, res.files_written, res.extra_files) == (1, 1, 1)
    assert (src / "b").read_text() == "b"


def test_non_utf8_names_round_trip(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    name = os.fsdecode(b"r\xe9sultat.bin")
    (src / name).write_bytes(b"x")
    ckpt(store, src).sync_once("one")
    dst = tmp_path / "dst"
    ckpt(store, dst).restore()
    assert set(os.listdir(os.fsencode(dst))) - {b".spot-agent"} == {b"r\xe9sultat.bin"}


def test_temp_files_and_reserved_dir_are_not_synced(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "src"
    (src / ".spot-agent").mkdir(parents=True)
    (src / ".spot-agent" / "progress.json").write_text('{"step": 5}')
    (src / ".state.json.x1.spot-tmp").write_text("half written")
    (src / "state.json").write_text("{}")
    r = ckpt(store, src).sync_once("one")
    m = JobStore(store, "job").load_manifest(r.sequence or 0)
    assert [f.path for f in m.files] == ["state.json"]
    assert m.progress == {"step": 5}


def test_a_newer_attempt_fences_off_the_stale_one(tmp_path: Path, store: CountingStore) -> None:
    job = JobStore(store, "job")
    old = job.claim_attempt({})
    src_old = tmp_path / "old"
    src_old.mkdir()
    (src_old / "a").write_text("old")
    stale = ckpt(store, src_old, attempt=old)
    assert stale.sync_once("one").sequence == 1
    new = job.claim_attempt({})
    assert new == old + 1
    (src_old / "a").write_text("old, later")
    with pytest.raises(Superseded, match=f"attempt {old} is stale"):
        stale.sync_once("two")
    assert job.sequences() == [1]
    src_new = tmp_path / "new"
    fresh = ckpt(store, src_new, attempt=new)
    fresh.restore()
    (src_new / "a").write_text("new")
    assert fresh.sync_once("one").sequence == 2


def test_commit_race_never_overwrites(tmp_path: Path, store: CountingStore) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("A")
    (b / "f").write_text("B")
    ca, cb = ckpt(store, a), ckpt(store, b)  # same attempt: the store's put-if-absent decides
    assert ca.sync_once("x").sequence == 1
    assert cb.sync_once("x").sequence == 2  # took the next number, did not replace 1
    m1 = JobStore(store, "job").load_manifest(1)
    assert m1.files[0].chunks[0].digest == new_id(b"A")


def test_prune_keeps_the_newest(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "src"
    src.mkdir()
    c = ckpt(store, src)
    for i in range(5):
        (src / "a").write_text(str(i))
        c.sync_once(str(i))
    assert c.prune(2) == [1, 2, 3]
    assert JobStore(store, "job").sequences() == [4, 5]


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from checkpoint.engine.store.uri import open_store
    from checkpoint.engine.checkpointer import Checkpointer
    from checkpoint.engine.format.jobstore import JobStore

    store = open_store(sys.argv[1])
    put = store.put_object

    def slow(key, data, *, sha256=None):
        put(key, data, sha256=sha256)
        if "/blobs/" in key:
            os.write(1, b"uploaded\\n")  # one write: uploads run in threads
            time.sleep(0.05)

    store.put_object = slow
    Checkpointer(  # no packs: one blob per file, so the kill lands between blob puts
        JobStore(store, "job"), Path(sys.argv[2]), chunk_size=65536, pack_threshold=0
    ).sync_once("doomed")
    print("committed", flush=True)
    """
)


def test_kill_9_in_the_middle_of_a_sync_then_restore_gc_and_sync_again(
    tmp_path: Path, store_url: str, any_store: Store
) -> None:
    store = any_store
    src = tmp_path / "src"
    src.mkdir()
    (src / "state").write_text("committed state")
    ckpt(store, src).sync_once("good")
    for i in range(40):
        (src / f"part{i}").write_bytes(os.urandom(CHUNK))
    (src / "state").write_text("newer state, never committed")
    proc = subprocess.Popen(  # the store's SDK environment (s3_env) is this process's
        [sys.executable, "-c", KILL_SCRIPT, store_url, str(src)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    for _ in range(6):
        assert proc.stdout.readline().strip() == "uploaded"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    job = JobStore(store, "job")
    assert job.sequences() == [1]
    dst = tmp_path / "dst"
    res = ckpt(store, dst).restore()
    assert res.manifest is not None and res.manifest.sequence == 1 and not res.skipped
    assert tree(dst) == {"state": b"committed state"}

    dry = collect_garbage(job, min_age=timedelta(0), dry_run=True)
    # the committed state is in a pack; the killed sync's blobs are referenced by nothing
    assert dry.deleted >= 6 and dry.referenced == 0 and dry.packs_referenced == 1
    young = collect_garbage(job)  # the default min age protects a sync that may be running
    assert young.deleted == 0 and young.kept_young == dry.deleted
    done = collect_garbage(job, min_age=timedelta(0))
    assert done.deleted == dry.deleted
    assert ckpt(store, tmp_path / "dst2").restore().manifest is not None

    # The next sync completes, and the restored result is the whole new state.
    assert ckpt(store, src).sync_once("after").sequence == 2
    dst3 = tmp_path / "dst3"
    ckpt(store, dst3).restore()
    assert tree(dst3) == tree(src)
    assert isinstance(job.load_manifest(2), Manifest)


def test_pending_bytes_counts_what_the_next_sync_must_send(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    old = time.time() - 3600
    for name in ("a", "b"):
        (src / name).write_bytes(os.urandom(1000))
        os.utime(src / name, (old, old))
    c = ckpt(store, src)
    assert c.pending_bytes() == 2000  # nothing committed yet
    c.sync_once("one")
    assert c.pending_bytes() == 0
    (src / "b").write_bytes(os.urandom(3000))
    (src / "c").write_bytes(os.urandom(500))
    assert c.pending_bytes() == 3500


def test_restore_never_touches_files_behind_a_symlinked_parent(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"same bytes")
    os.chmod(src / "d" / "f", 0o600)
    ckpt(store, src).sync_once("one")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"same bytes")  # identical content, outside the dir
    os.chmod(outside / "f", 0o644)
    os.utime(outside / "f", ns=(1_000_000_000, 1_000_000_000))
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "d").symlink_to(outside)
    r = ckpt(store, dst).restore()
    assert r.files_written == 1 and r.files_kept == 0
    st = (outside / "f").stat()
    assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o644, 1_000_000_000)
    assert not (dst / "d").is_symlink() and (dst / "d" / "f").read_bytes() == b"same bytes"


def test_a_rewrite_that_keeps_size_and_mtime_is_still_seen(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "weights"
    f.write_bytes(b"A" * 100)
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))  # old: trusted by the stat cache
    c = ckpt(store, src)
    c.sync_once("one")
    f.write_bytes(b"B" * 100)
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))  # like `cp -p`: same size, same mtime
    assert c.sync_once("two").sequence == 2
    dst = tmp_path / "dst"
    ckpt(store, dst).restore()
    assert (dst / "weights").read_bytes() == b"B" * 100


def test_gc_collects_the_temp_files_of_killed_puts_once_old_enough(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    ckpt(store, src).sync_once("one")
    # What a put killed between writing its temp file and renaming it leaves behind.
    blobs = tmp_path / "store" / "job" / "blobs" / "ab"
    blobs.mkdir(parents=True)
    partial = blobs / f".{'ab' * 32}.0123.tmp"
    partial.write_bytes(b"half an upl")
    manifest_tmp = tmp_path / "store" / "job" / "manifests" / ".0000000002.json.4567.tmp"
    manifest_tmp.write_bytes(b'{"format": 1, "fi')
    job = JobStore(store, "job")
    assert job.sequences() == [1]  # never seen as objects
    young = collect_garbage(job)
    assert young.incomplete_deleted == 0 and partial.exists()
    done = collect_garbage(job, min_age=timedelta(0))
    assert done.incomplete_deleted == 2 and done.deleted == 0
    assert not partial.exists() and not manifest_tmp.exists()
    dst = tmp_path / "dst"
    ckpt(store, dst).restore()
    assert tree(dst) == {"a": b"a"}
