"""Paged manifests (formats 4 and 5, issue 23): pages shared between checkpoints, so a
commit where k files changed writes O(k) manifest bytes; damaged and missing pages, gc,
kill -9 mid-commit, and a checkpoint of 300,000 files (the 64 MiB cap of format 3 stopped
it). Older agents and format 5's mixed hashes: tests/integration/test_format5.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format import paged
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.gc import collect_garbage, prune_manifests
from checkpoint.engine.store.base import LocalStore
from checkpoint.engine.store.s3 import S3Store
from checkpoint.errors import CheckpointError, ManifestError
from tests.crashsync import Tree, read_tree
from tests.servers import SeaweedS3

REPO = Path(__file__).resolve().parents[2]


class CountingStore(LocalStore):
    """A local store that records the bytes of every put."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: dict[str, int] = {}
        self.gets: list[str] = []

    def put_object(self, key: str, data: bytes, *, sha256: str | None = None) -> None:
        super().put_object(key, data, sha256=sha256)
        self.puts[key] = len(data)

    def put_object_if_absent(self, key: str, data: bytes) -> bool:
        self.puts[key] = len(data)
        return super().put_object_if_absent(key, data)

    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.gets.append(key)
        return super().get_object(key, max_bytes=max_bytes)


def many_files(root: Path, dirs: int, per_dir: int, size: int = 64) -> None:
    for d in range(dirs):
        (root / f"d{d:03d}").mkdir(parents=True)
        for i in range(per_dir):
            (root / f"d{d:03d}" / f"f{i:05d}").write_bytes(os.urandom(size))


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".spot-agent" not in p.parts
    }


def page_keys(store: LocalStore, job: str) -> set[str]:
    return {o.key for o in store.list_objects(f"{job}/pages/")}


def test_a_commit_writes_the_pages_that_changed_and_a_small_root(tmp_path: Path) -> None:
    src = tmp_path / "src"
    many_files(src, 20, 1000)  # 20,020 entries: paged
    store = CountingStore(tmp_path / "store")
    job = JobStore(store, "paged")
    ckpt = Checkpointer(job, src)
    try:
        assert ckpt.sync_once("first").sequence == 1
        first = sorted(n for k, n in store.puts.items() if "/pages/" in k)
        root = store.get_object(job.manifest_key(1))
        assert json.loads(root)["format"] == 5 and len(root) < 8192  # paged, BLAKE3 ids
        assert ckpt.base is not None and len(ckpt.base.pages) >= 5

        store.puts.clear()
        (src / "d007" / "f00500").write_bytes(b"changed")
        os.unlink(src / "d013" / "f00001")
        assert ckpt.sync_once("second").sequence == 2
    finally:
        ckpt.close()
    pages = [k for k in store.puts if "/pages/" in k]
    assert 1 <= len(pages) <= 2  # the pages holding the changed and the deleted file
    # what two pages weigh, not what the 20,000 entries do (format 3 wrote them all again)
    written = sum(store.puts[k] for k in pages)
    assert written <= first[-1] + first[-2] + 1024 and written < sum(first) / 3
    assert store.puts[job.manifest_key(2)] < 8192
    m2 = job.load_manifest(2)
    assert len(set(m2.pages) - set(job.load_manifest(1).pages)) == len(pages)
    into = tmp_path / "restored"
    assert Checkpointer(job, into).restore().manifest is not None
    assert files_of(into) == files_of(src)


def test_a_commit_makes_only_the_pages_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other pages are cut from the very entries of the last commit's pages: their ids
    come from its listing, their bytes are not made again (pagememo), in the agent that
    made them and in one that restored them (a warm restart)."""
    src = tmp_path / "src"
    many_files(src, 10, 1000)  # 10,010 entries: five pages or so
    hour_ago = time.time_ns() - 3600 * 10**9  # the stat cache keeps no file just written
    for f in src.rglob("f*"):
        os.utime(f, ns=(hour_ago, hour_ago))
    job = JobStore(CountingStore(tmp_path / "store"), "memo")
    made: list[str] = []
    real = paged.page_bytes  # how the commit (pages_of) makes a page's bytes
    monkeypatch.setattr(paged, "page_bytes", lambda kind, es: made.append(kind) or real(kind, es))
    ckpt = Checkpointer(job, src)
    try:
        assert ckpt.sync_once("first").sequence == 1
        first = job.load_manifest(1).pages
        assert len(made) == len(first) >= 4
        made.clear()
        (src / "d003" / "f00500").write_bytes(b"changed")
        os.utime(src / "d003" / "f00500", ns=(hour_ago, hour_ago))  # cached from now on
        assert ckpt.sync_once("second").sequence == 2
        # The page of dirs is made again (a scan makes new dir entries: one page here).
        assert made.count("files") == 1  # was every page: each encoded and hashed again
    finally:
        ckpt.close()
    assert len(set(job.load_manifest(2).pages) - set(first)) == 1
    warm = Checkpointer(job, src, attempt=2)
    try:
        assert warm.restore().files_written == 0
        made.clear()
        (src / "d008" / "f00001").write_bytes(b"changed after a warm restart")
        assert warm.sync_once("third").sequence == 3
        assert made.count("files") == 1
    finally:
        warm.close()
    into = tmp_path / "restored"
    assert Checkpointer(job, into).restore().manifest is not None
    assert files_of(into) == files_of(src)


def paged_store(tmp_path: Path) -> tuple[LocalStore, JobStore, Path, dict[str, bytes]]:
    """Two paged checkpoints of a small dir (every manifest paged), the second with one
    file changed: their pages differ in one page of files. Also: what the first holds."""
    src = tmp_path / "src"
    many_files(src, 3, 50)
    (src / "d000" / "link").symlink_to("f00001")
    os.link(src / "d001" / "f00001", src / "d001" / "hard")
    store = LocalStore(tmp_path / "store")
    job = JobStore(store, "paged")
    ckpt = Checkpointer(job, src, paged_above=0)
    try:
        assert ckpt.sync_once("first").sequence == 1
        first = files_of(src)
        (src / "d002" / "f00007").write_bytes(b"second version")
        assert ckpt.sync_once("second").sequence == 2
    finally:
        ckpt.close()
    return store, job, src, first


def only_in_newest(job: JobStore) -> str:
    (page,) = set(job.load_manifest(2).pages) - set(job.load_manifest(1).pages)
    return page


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_or_missing_page_makes_restore_fall_back_loudly(
    tmp_path: Path, damage: str
) -> None:
    store, job, _src, first = paged_store(tmp_path)
    path = store.root / job.page_key(only_in_newest(job))
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    with pytest.raises(ManifestError, match="damaged" if damage == "flip" else "missing"):
        job.load_manifest(2)
    into = tmp_path / "restored"
    with capture_logs() as logs:
        result = Checkpointer(job, into).restore()
    assert result.manifest is not None and result.manifest.sequence == 1
    assert [seq for seq, _why in result.skipped] == [2]
    assert "restore.checkpoint_damaged" in [e["event"] for e in logs]
    assert files_of(into) == first


def test_gc_reads_each_page_once_however_many_checkpoints_share_it(tmp_path: Path) -> None:
    store, _job, _src, _first = paged_store(tmp_path)
    counting = CountingStore(store.root)
    job = JobStore(counting, "paged")
    pages = set(job.load_manifest(1).pages) | set(job.load_manifest(2).pages)
    counting.gets.clear()
    result = collect_garbage(job, min_age=timedelta(0))
    read = [k for k in counting.gets if "/pages/" in k]
    assert sorted(read) == sorted(job.page_key(p) for p in pages)  # each once
    assert result.pages == result.pages_referenced == len(pages) and result.pages_deleted == 0


def test_gc_keeps_the_pages_of_kept_checkpoints_and_deletes_the_rest(tmp_path: Path) -> None:
    store, job, src, _first = paged_store(tmp_path)
    gone = set(job.load_manifest(1).pages) - set(job.load_manifest(2).pages)
    assert gone and len(page_keys(store, "paged")) == len(job.load_manifest(2).pages) + len(gone)
    assert prune_manifests(job, 1) == [1]
    result = collect_garbage(job, min_age=timedelta(0))
    assert result.pages_deleted == len(gone)
    assert page_keys(store, "paged") == {job.page_key(p) for p in job.load_manifest(2).pages}
    into = tmp_path / "restored"
    assert Checkpointer(job, into).restore().manifest is not None
    assert files_of(into) == files_of(src)


def test_formats_1_and_2_restore_and_the_next_sync_pages(tmp_path: Path) -> None:
    fixtures = REPO / "tests" / "fixtures"
    for name in ("format1_store", "format2_store"):
        store = LocalStore(tmp_path / name)
        shutil.copytree(fixtures / name, store.root)
        (job_id,) = [p.name for p in store.root.iterdir() if p.is_dir()]
        job = JobStore(store, job_id)
        into = tmp_path / f"{name}-dir"
        ckpt = Checkpointer(job, into, paged_above=0)
        try:
            restored = ckpt.restore()
            assert restored.manifest is not None and not restored.skipped
            before = files_of(into)
            (into / "added").write_bytes(b"after the upgrade")
            seq = ckpt.sync_once("upgraded").sequence
        finally:
            ckpt.close()
        assert (
            seq is not None and json.loads(store.get_object(job.manifest_key(seq)))["format"] == 5
        )
        again = tmp_path / f"{name}-again"
        assert Checkpointer(job, again).restore().manifest is not None
        assert files_of(again) == {**before, "added": b"after the upgrade"}


def test_kill_9_at_every_step_of_a_paged_commit_leaves_the_store_restorable(
    tmp_path: Path,
) -> None:
    """The child (tests/crashsync.py) SIGKILLs itself at each step of its puts in turn: the
    pack, every page, the root. Each time: restore gives the old tree or the new one exactly,
    gc leaves no page that no manifest names and every page one does, and a new sync commits."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    old = Tree({f"d{i % 4}/f{i}": os.urandom(100) for i in range(40)}, {"empty"}, {"ln": "d0"})
    new = old.copy()
    new.files["d1/f1"] = b"rewritten"
    new.files["d3/added"] = b"new file"
    del new.files["d2/f2"]
    clean = tmp_path / "clean"

    def sync(store: Path, work: Path, tree: Tree, kill_at: int) -> subprocess.CompletedProcess[str]:
        tree_file = tmp_path / "tree.json"
        tree_file.write_text(tree.to_json())
        args = [f"file://{store}", "crash", str(work), str(tree_file), str(kill_at), "0"]
        return subprocess.run(
            [sys.executable, "-m", "tests.crashsync", *args, "4096", str(1 << 20), "0"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )

    first = sync(clean, tmp_path / "w0", old, -1)
    assert first.returncode == 0, first.stderr
    probe = tmp_path / "probe"
    shutil.copytree(clean, probe)
    done = sync(probe, tmp_path / "w1", new, -1)
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout.splitlines()[-1])["steps"]
    assert steps >= 9  # a pack, at least a page of each kind, the root: three steps each
    for kill_at in range(steps):
        store_dir = tmp_path / f"s{kill_at}"
        shutil.copytree(clean, store_dir)
        killed = sync(store_dir, tmp_path / f"w{kill_at}-k", new, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        store = LocalStore(store_dir)
        job = JobStore(store, "crash")
        expect = new if job.sequences() == [1, 2] else old
        assert job.sequences() in ([1], [1, 2]), kill_at
        into = tmp_path / f"r{kill_at}"
        res = Checkpointer(job, into).restore()
        assert not res.skipped, (kill_at, res.skipped)
        assert read_tree(into).normalized() == expect.normalized(), kill_at
        collect_garbage(job, min_age=timedelta(0))
        named = {job.page_key(p) for s in job.sequences() for p in job.load_manifest(s).pages}
        assert page_keys(store, "crash") == named, kill_at
        if expect is old:
            again = sync(store_dir, tmp_path / f"w{kill_at}-again", new, -1)
            assert again.returncode == 0, (kill_at, again.stderr)
            into = tmp_path / f"r{kill_at}-again"
            assert Checkpointer(job, into).restore().manifest is not None
            assert read_tree(into).normalized() == new.normalized(), kill_at
        shutil.rmtree(store_dir)


@pytest.mark.long
def test_300000_files_commit_and_restore_byte_for_byte(tmp_path: Path) -> None:
    """Format 3 refused this checkpoint: its manifest (about 265 B a file) passed the 64 MiB
    cap and every sync failed. Paged, it commits; every byte comes back."""
    src = tmp_path / "src"
    count = 0
    for d in range(300):
        (src / f"d{d:03d}").mkdir(parents=True)
        for i in range(1000):
            (src / f"d{d:03d}" / f"f{i:04d}").write_bytes(hashlib.sha512(b"%d" % count).digest())
            count += 1
    store = LocalStore(tmp_path / "store")
    job = JobStore(store, "many")
    ckpt = Checkpointer(job, src)
    try:
        result = ckpt.sync_once("first")
    finally:
        ckpt.close()
    assert result.sequence == 1 and result.files == 300_000
    assert json.loads(store.get_object(job.manifest_key(1)))["format"] == 5
    into = tmp_path / "restored"
    restore = Checkpointer(job, into)
    try:
        res = restore.restore()
    finally:
        restore.close()
    assert res.manifest is not None and len(res.manifest.files) == 300_000
    n = 0
    for d in range(300):
        for i in range(1000):
            rel = f"d{d:03d}/f{i:04d}"
            assert (into / rel).read_bytes() == (src / rel).read_bytes(), rel
            n += 1
    assert n == 300_000
    assert sum(1 for p in into.rglob("*") if p.is_file() and ".spot-agent" not in p.parts) == n


def test_checkpoints_show_json_gives_a_paged_manifest_with_its_pages(tmp_path: Path) -> None:
    from tests.agentproc import cli

    _store, job, _src, _first = paged_store(tmp_path)  # the store is tmp_path / "store"
    out = cli(tmp_path, "checkpoints", "show", "--job-id", "paged", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["format"] == 5 and doc["sequence"] == 2
    files = [row[0] for p in doc["pages"] if p["kind"] == "files" for row in p["page"]["entries"]]
    assert files == [f.path for f in job.load_manifest(2).files]


def test_a_paged_checkpoint_round_trips_through_s3(
    tmp_path: Path, s3_env: SeaweedS3, s3_bucket: tuple[str, str]
) -> None:
    """On SeaweedFS: pages PUT with their checksums, read back a few at a time; a second
    commit reuses the pages that did not change."""
    assert s3_bucket[0] == s3_env.endpoint  # loopback only: the SDK's endpoint is the server
    src = tmp_path / "src"
    many_files(src, 3, 400)
    store = S3Store.from_uri(f"s3://{s3_bucket[1]}/paged")
    try:
        job = JobStore(store, "paged")
        ckpt = Checkpointer(job, src, paged_above=0)
        try:
            assert ckpt.sync_once("first").sequence == 1
            (src / "d001" / "f00200").write_bytes(b"changed")
            assert ckpt.sync_once("second").sequence == 2
        finally:
            ckpt.close()
        first, second = job.load_manifest(1).pages, job.load_manifest(2).pages
        assert len(second) >= 3 and len(set(second) - set(first)) == 1
        into = tmp_path / "restored"
        restore = Checkpointer(job, into)
        try:
            assert restore.restore().manifest is not None
        finally:
            restore.close()
        assert files_of(into) == files_of(src)
    finally:
        store.close()


def test_a_warm_restart_from_a_paged_checkpoint_reads_no_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    many_files(src, 3, 40)
    for p in src.rglob("f*"):  # old enough to be vouched for (not racy)
        os.utime(p, (1_600_000_000, 1_600_000_000))
    job = JobStore(LocalStore(tmp_path / "store"), "warm")
    first = Checkpointer(job, src, attempt=1, paged_above=0)
    try:
        assert first.sync_once("first").sequence == 1
    finally:
        first.close()
    again = Checkpointer(job, src, attempt=2, paged_above=0)
    try:
        r = again.restore()
        assert (r.files_indexed, r.bytes_hashed, r.files_written) == (120, 0, 0)
        assert r.manifest is not None and r.manifest.pages
        after = again.sync_once("after")
        assert (after.sequence, after.bytes_hashed) == (None, 0)
    finally:
        again.close()


def test_a_damaged_page_stops_gc_before_it_deletes_anything(tmp_path: Path) -> None:
    store, job, _src, _first = paged_store(tmp_path)
    assert prune_manifests(job, 1) == [1]  # checkpoint 1's own pages are now garbage
    before = {o.key for o in store.list_objects("paged/")}
    path = store.root / job.page_key(job.load_manifest(2).pages[-1])
    path.write_bytes(path.read_bytes()[:-1] + b" ")
    with pytest.raises(CheckpointError, match=r"gc stopped, nothing deleted: .*damaged"):
        collect_garbage(job, min_age=timedelta(0))
    assert {o.key for o in store.list_objects("paged/")} == before
