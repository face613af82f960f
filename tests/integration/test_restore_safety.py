"""What sync commits, restore accepts; what restore refuses never replaces what it could restore.

Issue 16's store-side findings against the local store, each as it was observed: many
files under a low descriptor limit (against SeaweedFS too), odd names and old mtimes, a
bad newest manifest and ``keep`` pruning, hostile store content, leaked staging, sparse
files, hard links and directory modes, trees deeper than PATH_MAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.format.manifest import MAX_PATH_BYTES
from checkpoint.engine.store.base import LocalStore, Store
from checkpoint.errors import ObjectTooLarge
from tests.integration.test_sync import CHUNK, CountingStore, ckpt, tree
from tests.stores import kind_of

FIXTURES = Path(__file__).parent.parent / "fixtures"


class GetCountingStore(LocalStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: list[str] = []

    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.gets.append(key)
        return super().get_object(key, max_bytes=max_bytes)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def restore_in_child(store_url: str, dest: Path, nofile: int) -> subprocess.CompletedProcess[str]:
    """Restore in a fresh process whose open-file limit is ``nofile`` (soft and hard); the
    store's SDK environment, if any (``s3_env``), is this process's."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        from pathlib import Path
        resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile}))
        from checkpoint.engine.store.uri import open_store
        from checkpoint.engine.checkpointer import Checkpointer
        from checkpoint.engine.format.jobstore import JobStore
        c = Checkpointer(JobStore(open_store({store_url!r}), "job"), Path({str(dest)!r}),
                         attempt=2)
        r = c.restore()
        print(r.manifest.sequence if r.manifest else "none", r.files_written)
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


#: files per kind of store: more than the limit of 256 open files either way
MANY = {"local": 1500, "s3": 600}


def test_many_files_restore_under_ulimit_n_256(
    tmp_path: Path, store_url: str, any_store: Store
) -> None:
    n = MANY[kind_of(store_url)]
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        (src / f"f{i:04d}").write_bytes(b"%d" % i)
    assert ckpt(any_store, src).sync_once("many").sequence == 1
    done = restore_in_child(store_url, tmp_path / "dst", 256)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1].split() == ["1", str(n)]
    assert tree(tmp_path / "dst") == tree(src)


def test_names_with_any_byte_and_mtimes_before_1970_come_back(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    names = [b"back\\slash", b"\xff\xfe latin", b"new\nline", b"tab\tand *?", b"a\\..\\b"]
    for i, name in enumerate(names):
        path = os.path.join(os.fsencode(src), name)
        with open(path, "wb") as fh:
            fh.write(b"x" * i)
        os.utime(path, ns=(-1_000_000_000_000_000_000 - i, -1_000_000_000_000_000_000 - i))
    assert ckpt(store, src).sync_once("odd").sequence == 1
    dst = tmp_path / "dst"
    r = ckpt(store, dst, attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    for i, name in enumerate(names):
        st = os.stat(os.path.join(os.fsencode(dst), name))
        assert st.st_size == i and st.st_mtime_ns == -1_000_000_000_000_000_000 - i


def test_a_path_sync_cannot_record_is_left_out_loudly_and_the_rest_commits(
    tmp_path: Path, store: CountingStore
) -> None:
    """A tree deeper than PATH_MAX used to fail every sync."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.txt").write_text("kept")
    fd = os.open(src, os.O_RDONLY)
    try:  # 30 levels of 200-byte names: 6000 bytes, beyond PATH_MAX, built with dir fds
        for _ in range(30):
            os.mkdir("d" * 200, dir_fd=fd)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)
    r = ckpt(store, src).sync_once("deep")
    assert r.sequence == 1 and r.files == 1
    dst = tmp_path / "dst"
    m = ckpt(store, dst, attempt=2).restore().manifest
    assert m is not None and (dst / "keep.txt").read_text() == "kept"
    assert all(len(d.path) <= MAX_PATH_BYTES for d in m.dirs)


def test_a_damaged_newest_checkpoint_does_not_let_prune_bury_the_good_one(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    c = ckpt(store, src)
    for step in range(3):
        (src / "state").write_text(f"step {step}")
        c.sync_once("periodic")
    job = JobStore(store, "job")
    bad = store.root / job.manifest_key(3)
    bad.write_bytes(bad.read_bytes()[:100])  # the newest is damaged
    dst = tmp_path / "dst"
    c2 = ckpt(store, dst, attempt=2)
    r = c2.restore()
    assert r.manifest is not None and r.manifest.sequence == 2 and r.skipped[0][0] == 3
    (dst / "state").write_text("step 2, then more")
    assert c2.sync_once("periodic").sequence == 4
    c2.prune(keep=1)
    assert job.sequences() == [1, 2, 3, 4][1:]  # 1 pruned; 2 (restored) and 3 (damaged) kept
    (dst / "other").write_text("later")
    c2.sync_once("periodic")
    c2.prune(keep=1)
    assert 2 in job.sequences()


def test_odd_keys_in_the_store_are_ignored_with_a_warning(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    ckpt(store, src).sync_once("one")
    for folder in ("manifests", "attempts"):
        (store.root / "job" / folder).mkdir(exist_ok=True)
        (store.root / "job" / folder / "\u00b2.json").write_text("{}")
        (store.root / "job" / folder / "12x.json").write_text("{}")
    job = JobStore(store, "job")
    assert job.sequences() == [1]
    assert job.claim_attempt({}) == 1
    r = ckpt(store, tmp_path / "dst", attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 1


def put_manifest(store: LocalStore, seq: int, doc: dict) -> None:
    path = store.root / JobStore(store, "job").manifest_key(seq)
    path.write_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize("hostile", ["nested", "huge-chunk", "too-many"])
def test_hostile_manifests_fall_back_without_a_crash(
    tmp_path: Path, store: CountingStore, hostile: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("good")
    ckpt(store, src).sync_once("one")
    path = store.root / JobStore(store, "job").manifest_key(2)
    if hostile == "nested":  # 400 KB of nesting used to crash every start (RecursionError)
        path.write_bytes(b'{"format":2,"progress":' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    elif hostile == "huge-chunk":  # a chunk claiming 10^15 bytes used to give exit 73
        doc = json.loads((store.root / JobStore(store, "job").manifest_key(1)).read_bytes())
        doc["sequence"] = 2
        doc["files"][0]["size"] = 10**15
        chunk = doc["files"][0]["chunks"][0]  # a blob that is there, all 4 bytes of it
        if isinstance(chunk, dict):
            chunk["size"] = 10**15
        else:  # format 1
            chunk[1] = 10**15
        put_manifest(store, 2, doc)
    else:  # two million entries: refused by counting, before anything is built in memory
        path.write_bytes(b'{"format":2,"files":[' + b'{"path":"x"},' * 2_000_000 + b"]}")
    dst = tmp_path / "dst"
    r = ckpt(store, dst, attempt=2).restore()
    assert r.manifest is not None and r.manifest.sequence == 1
    assert [seq for seq, _ in r.skipped] == [2]
    assert (dst / "a").read_text() == "good"


def test_an_oversized_blob_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A 1.5 GiB object at a blob key used to be read whole (3.1 GB RSS)."""
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 1000)
    ckpt(store, src, pack_threshold=0).sync_once("one")
    (src / "a").write_bytes(b"y" * 1000)
    ckpt(store, src, pack_threshold=0).sync_once("two")
    m = JobStore(store, "job").load_manifest(2)
    key = JobStore(store, "job").blob_key(m.files[0].chunks[0].digest)
    os.truncate(store.root / key, 3 << 29)  # 1.5 GiB, sparse: costs no disk
    with pytest.raises(ObjectTooLarge):
        store.get_object(key, max_bytes=1000)
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from checkpoint.engine.store.base import LocalStore, Store
        from checkpoint.engine.checkpointer import Checkpointer
        from checkpoint.engine.format.jobstore import JobStore
        c = Checkpointer(JobStore(LocalStore(Path({str(store.root)!r})), "job"),
                         Path({str(tmp_path / "dst")!r}), attempt=2)
        r = c.restore()
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so it would
        # report the test's own process (a pytest worker that ran big tests before)
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        print(r.manifest.sequence, int(hwm.split()[1]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seq, maxrss_kib = map(int, out.stdout.splitlines()[-1].split())
    assert seq == 1  # fell back
    assert maxrss_kib < 400 << 10  # never near the object's 1.5 GiB


def test_staging_of_a_killed_restore_is_removed_at_the_next_start(
    tmp_path: Path, store: CountingStore
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    ckpt(store, src).sync_once("one")
    dst = tmp_path / "dst"
    leftover = dst / ".spot-agent" / "restore-0123456789ab"
    leftover.mkdir(parents=True)
    (leftover / "0").write_bytes(b"\0" * 100_000)
    (dst / ".spot-agent" / "progress.json").write_text("{}")  # the job's own: kept
    ckpt(store, dst, attempt=2).restore()
    assert not leftover.exists()
    assert (dst / ".spot-agent" / "progress.json").exists()


def test_sparse_files_are_neither_uploaded_nor_downloaded_as_zeros(tmp_path: Path) -> None:
    store = GetCountingStore(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    size = 256 * CHUNK  # the 2 GiB file of the report, scaled to 256 chunks
    with open(src / "sparse", "wb") as fh:
        fh.truncate(size)
        fh.seek(100 * CHUNK + 5)
        fh.write(os.urandom(CHUNK // 2))
    with open(src / "zeros", "wb") as fh:  # written zeros, not a hole: still not stored
        fh.write(b"\0" * 8 * CHUNK)
    os.utime(src / "sparse", ns=(10**18, 10**18))  # old enough for the stat cache
    os.utime(src / "zeros", ns=(10**18, 10**18))
    c = ckpt(store, src)
    r = c.sync_once("sparse")
    assert r.bytes_uploaded <= 2 * CHUNK
    (src / "other").write_text("changed")
    assert c.sync_once("again").bytes_hashed == len("changed")  # holes do not defeat the cache
    store.gets.clear()
    dst = tmp_path / "dst"
    ckpt(store, dst, attempt=2).restore()
    blob_gets = [k for k in store.gets if "/blobs/" in k]
    assert len(blob_gets) <= 2  # the data, not the same zero chunk 256 times
    assert (dst / "sparse").read_bytes() == (src / "sparse").read_bytes()
    assert (dst / "zeros").read_bytes() == b"\0" * 8 * CHUNK
    assert os.stat(dst / "sparse").st_blocks * 512 < 8 * CHUNK  # holes stay holes


def test_hard_links_and_directory_modes_are_kept(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "src"
    (src / "d" / "inner").mkdir(parents=True)
    (src / "a").write_bytes(b"shared")
    os.link(src / "a", src / "d" / "b")
    os.chmod(src / "d" / "inner", 0o751)
    os.chmod(src / "d", 0o550)
    try:
        assert ckpt(store, src).sync_once("links").sequence == 1
        dst = tmp_path / "dst"
        ckpt(store, dst, attempt=2).restore()
        assert os.stat(dst / "a").st_ino == os.stat(dst / "d" / "b").st_ino
        assert (dst / "d" / "b").read_bytes() == b"shared"
        assert os.stat(dst / "d").st_mode & 0o777 == 0o550
        assert os.stat(dst / "d" / "inner").st_mode & 0o777 == 0o751
        ckpt(store, dst, attempt=3).restore()  # again, into its own read-only dirs
        assert os.stat(dst / "a").st_ino == os.stat(dst / "d" / "b").st_ino
    finally:
        for root in (src, tmp_path / "dst"):
            if (root / "d").exists():
                os.chmod(root / "d", 0o700)


def test_a_stored_format_1_checkpoint_still_restores(tmp_path: Path) -> None:
    store = LocalStore(FIXTURES / "format1_store")
    dst = tmp_path / "dst"
    c = Checkpointer(JobStore(store, "f1job"), dst, attempt=2)
    r = c.restore()
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    assert (dst / "sub" / "a.txt").read_text() == "hello\n"
    assert (dst / "b.bin").read_bytes() == b"x" * 3000
    assert os.readlink(dst / "link") == "sub/a.txt"
    assert os.stat(dst / "b.bin").st_mode & 0o777 == 0o640


def test_a_fifo_swapped_in_after_the_scan_is_refused_not_waited_on(tmp_path: Path) -> None:
    from checkpoint.engine.localdir.scan import NotRegularFile, hash_file

    os.mkfifo(tmp_path / "pipe")  # nobody ever writes to it: a blocking open would hang
    with pytest.raises(NotRegularFile):
        hash_file(tmp_path / "pipe", CHUNK, lambda chunk, data: None)


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    code = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))
        from checkpoint.engine.restore.restore import raise_open_file_limit
        print(*raise_open_file_limit())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["4096", "4096"], out.stderr


def test_kill_9_during_a_restore_leaves_no_staging_after_the_next(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(os.urandom(CHUNK))
    ckpt(LocalStore(tmp_path / "store"), src, pack_threshold=0).sync_once("one")
    dst = tmp_path / "dst"
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from checkpoint.engine.store.base import LocalStore, Store
        from checkpoint.engine.checkpointer import Checkpointer
        from checkpoint.engine.format.jobstore import JobStore

        class Slow(LocalStore):
            def get_object(self, key, *, max_bytes=None):
                if "/blobs/" in key:
                    print("fetching", flush=True)
                    time.sleep(0.2)
                return super().get_object(key, max_bytes=max_bytes)

        Checkpointer(JobStore(Slow(Path({str(tmp_path / "store")!r})), "job"),
                     Path({str(dst)!r}), chunk_size={CHUNK}).restore()
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if "fetching" in line:
                break
        child.kill()  # SIGKILL: no cleanup runs
    finally:
        child.wait(60)
    assert list((dst / ".spot-agent").glob("restore-*")), "the kill left staging behind"
    r = ckpt(LocalStore(tmp_path / "store"), dst, attempt=2).restore()
    assert r.manifest is not None
    assert not list((dst / ".spot-agent").glob("restore-*"))
    assert tree(dst) == tree(src)


def test_gc_keep_never_prunes_the_newest_checkpoint_that_loads(
    tmp_path: Path, store: CountingStore
) -> None:
    from checkpoint.engine.gc import prune_manifests

    src = tmp_path / "src"
    src.mkdir()
    c = ckpt(store, src)
    for step in range(4):
        (src / "state").write_text(f"step {step}")
        c.sync_once("periodic")
    job = JobStore(store, "job")
    for seq in (3, 4):  # the two newest are damaged
        (store.root / job.manifest_key(seq)).write_bytes(b"{")
    assert prune_manifests(job, keep=1) == [1, 3]  # keep 4 (newest) and 2 (loads)
    assert job.sequences() == [2, 4]
    assert ckpt(store, tmp_path / "dst", attempt=2).restore().manifest.sequence == 2  # type: ignore[union-attr]
