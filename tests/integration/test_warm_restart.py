"""Warm restarts: the local index (checkpoint.engine.localdir.localindex) lets a restore into
a dir that already holds the checkpoint keep its files without reading them, and only while that is
provably safe: same boot, same job and checkpoint, every stat field the same, not racy."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.config import DEFAULTS, EngineConfig
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.localdir.indexfile import STAT_ROW as STAT
from checkpoint.engine.localdir.indexfile import index_path
from checkpoint.engine.save.upload import PACK_THRESHOLD
from checkpoint.engine.store.base import LocalStore, ObjectInfo

REPO = Path(__file__).resolve().parents[2]
CHUNK = 64 * 1024
OLD = 10**9 * 1_600_000_000  # Sept 2020: far from racy


class CountingStore(LocalStore):
    """A local store that records every request restore makes of it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, str]] = []

    def exists(self, key: str) -> bool:
        self.calls.append(("HEAD", key))
        return super().exists(key)

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        self.calls.append(("LIST", prefix))
        return super().list_objects(prefix)

    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.calls.append(("GET", key))
        return super().get_object(key, max_bytes=max_bytes)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def ckpt(
    store: LocalStore,
    directory: Path,
    attempt: int = 1,
    job: str = "job",
    *,
    packs: bool = True,
    boot: Path | None = None,
) -> Checkpointer:
    """``packs=False``: every file its own blobs, for the tests of how many objects are looked
    at and how (small files would otherwise share one pack). ``boot``: where this boot's id
    is read (default: the kernel's)."""
    config = DEFAULTS if boot is None else EngineConfig(boot_id_path=boot)
    return Checkpointer(
        JobStore(store, job),
        directory,
        attempt=attempt,
        config=config,
        chunk_size=CHUNK,
        pack_threshold=PACK_THRESHOLD if packs else 0,
    )


def make_files(d: Path, n: int, size: int = 3000) -> dict[str, bytes]:
    """n files with old mtimes (the stat cache keeps no file written in the last 2 s)."""
    d.mkdir(parents=True, exist_ok=True)
    made = {}
    for i in range(n):
        data = os.urandom(size)
        (d / f"f{i:03d}").write_bytes(data)
        os.utime(d / f"f{i:03d}", ns=(OLD + i, OLD + i))
        made[f"f{i:03d}"] = data
    time.sleep(0.02)  # the files' ctime and the index's mtime fall in different clock ticks
    return made


def test_warm_restart_reads_nothing_and_lists_instead_of_heads(
    tmp_path: Path, store: CountingStore
) -> None:
    d = tmp_path / "d"
    made = make_files(d, 30)
    assert ckpt(store, d, packs=False).sync_once("first").sequence == 1
    assert index_path(d).is_file()
    store.calls.clear()
    c = ckpt(store, d, attempt=2, packs=False)
    r = c.restore()
    assert (r.files_kept, r.files_indexed, r.bytes_hashed, r.files_written) == (30, 30, 0, 0)
    # manifests listed, the manifest read, the kept files' blobs checked with one listing
    assert store.calls == [
        ("LIST", "job/manifests/"),
        ("GET", "job/manifests/0000000001.json"),
        ("LIST", "job/blobs/"),
    ]
    again = c.sync_once("after")  # seeded from the restore: nothing is read again
    assert (again.sequence, again.bytes_hashed) == (None, 0)
    assert {p: (d / p).read_bytes() for p in made} == made


def test_warm_restart_of_packed_files_looks_at_their_pack_once(
    tmp_path: Path, store: CountingStore
) -> None:
    d = tmp_path / "d"
    make_files(d, 30)
    assert ckpt(store, d).sync_once("first").sequence == 1
    store.calls.clear()
    r = ckpt(store, d, attempt=2).restore()
    # the index's chunks carry the pack each file lives in, as the manifest's do
    assert (r.files_kept, r.files_indexed, r.bytes_hashed, r.files_written) == (30, 30, 0, 0)
    pack_looks = [(kind, key) for kind, key in store.calls if "/packs/" in key]
    assert len(pack_looks) == 1 and pack_looks[0][0] == "HEAD"


def test_few_kept_blobs_are_checked_with_heads(tmp_path: Path, store: CountingStore) -> None:
    d = tmp_path / "d"
    make_files(d, 3)
    ckpt(store, d, packs=False).sync_once("first")
    store.calls.clear()
    r = ckpt(store, d, attempt=2, packs=False).restore()
    assert r.files_indexed == 3
    assert sorted(kind for kind, _ in store.calls) == ["GET", "HEAD", "HEAD", "HEAD", "LIST"]


def test_a_blob_missing_from_the_store_is_found_by_the_listing(
    tmp_path: Path, store: CountingStore
) -> None:
    d = tmp_path / "d"
    made = make_files(d, 20)
    ckpt(store, d, packs=False).sync_once("first")
    blobs = sorted((tmp_path / "store" / "job" / "blobs").rglob("*"))
    gone = next(p for p in blobs if p.is_file())
    gone.unlink()
    c = ckpt(store, d, attempt=2, packs=False)
    with capture_logs() as logs:
        r = c.restore()
    assert r.files_indexed == 20
    assert [e["count"] for e in logs if e["event"] == "restore.blobs_missing_in_store"] == [1]
    again = c.sync_once("repair")  # not taken as stored: uploaded again (nothing to commit)
    assert again.chunks_uploaded == 1 and gone.is_file()
    assert {p: (d / p).read_bytes() for p in made} == made


def test_a_file_changed_behind_the_index_with_its_mtime_put_back_is_rechecked(
    tmp_path: Path, store: CountingStore
) -> None:
    d = tmp_path / "d"
    made = make_files(d, 5)
    ckpt(store, d).sync_once("first")
    forged = d / "f002"
    before = os.stat(forged)
    forged.write_bytes(os.urandom(3000))  # same size
    os.utime(forged, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: ctime moved
    after = os.stat(forged)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    r = ckpt(store, d, attempt=2).restore()
    assert (r.files_indexed, r.bytes_hashed, r.files_written) == (4, 3000, 1)
    assert forged.read_bytes() == made["f002"]


def test_another_boot_means_every_file_is_read(
    tmp_path: Path, store: CountingStore, boot: Path
) -> None:
    d = tmp_path / "d"
    make_files(d, 5)
    ckpt(store, d, boot=boot).sync_once("first")
    boot.write_text("99999999-2222-3333-4444-555555555555\n")  # a reboot
    with capture_logs() as logs:
        r = ckpt(store, d, attempt=2, boot=boot).restore()
    assert (r.files_kept, r.files_indexed, r.bytes_hashed) == (5, 0, 15000)
    assert any(e["event"] == "index.not_trusted" and "reboot" in e["why"] for e in logs)


def test_no_boot_id_means_no_index(tmp_path: Path, store: CountingStore) -> None:
    missing = tmp_path / "no-such-file"
    d = tmp_path / "d"
    make_files(d, 2)
    ckpt(store, d, boot=missing).sync_once("first")
    assert not index_path(d).exists()
    r = ckpt(store, d, attempt=2, boot=missing).restore()
    assert (r.files_kept, r.files_indexed, r.bytes_hashed) == (2, 0, 6000)


def _rows(d: Path) -> dict[str, list[Any]]:
    """The index's rows by path: [path, size, mtime_ns, ctime_ns, inode, device, chunks]."""
    with contextlib.closing(sqlite3.connect(index_path(d))) as db:
        found = db.execute("SELECT path, stat, chunks FROM files").fetchall()
    return {os.fsdecode(p): [p, *STAT.unpack(st), chunks] for p, st, chunks in found}


def _edit_index(d: Path, edit: Callable[[sqlite3.Connection], object]) -> None:
    """Change the index in place with SQL (its mtime moves, as a rewrite's would)."""
    with contextlib.closing(sqlite3.connect(index_path(d), isolation_level=None)) as db:
        edit(db)


def _set_stat(db: sqlite3.Connection, path: str, **fields: int) -> None:
    key = os.fsencode(path)
    (recorded,) = db.execute("SELECT stat FROM files WHERE path = ?", (key,)).fetchone()
    names = ("size", "mtime_ns", "ctime_ns", "ino", "dev")
    row = dict(zip(names, STAT.unpack(recorded), strict=True))
    row.update(fields)
    db.execute("UPDATE files SET stat = ? WHERE path = ?", (STAT.pack(*row.values()), key))


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00\xff garbage",
        b"[1, 2, 3]",
        b'{"format": 1}',
        b'{"format": 1, "job_id": "job", "sequence": 1, "boot_id": "x", "files": 7}',
        b'{"format": 1, "job_id": "job", "sequence": 1, "boot_id": "x", "files": [[[]]]}',
        b"[" * 100_000,
    ],
    ids=["empty", "binary", "a list", "no fields", "files not a list", "rows of lists", "deep"],
)
def test_a_damaged_index_is_ignored_with_a_warning(
    tmp_path: Path, store: CountingStore, garbage: bytes
) -> None:
    d = tmp_path / "d"
    make_files(d, 3)
    ckpt(store, d).sync_once("first")
    index_path(d).write_bytes(garbage)
    with capture_logs() as logs:
        r = ckpt(store, d, attempt=2).restore()
    assert (r.files_kept, r.files_indexed, r.bytes_hashed) == (3, 0, 9000)
    assert [e["log_level"] for e in logs if e["event"] == "index.damaged"] == ["warning"]


def test_a_database_without_what_an_index_holds_is_ignored(
    tmp_path: Path, store: CountingStore
) -> None:
    d = tmp_path / "d"
    make_files(d, 3)
    ckpt(store, d).sync_once("first")
    head = "INSERT INTO head SELECT * FROM head"
    for damage in ("DROP TABLE head", "DROP TABLE files", head, "DELETE FROM head"):
        ckpt(store, d).sync_once("again")  # nothing changed: the same index
        _edit_index(d, lambda db, sql=damage: db.execute(sql))  # type: ignore[misc]
        with capture_logs() as logs:
            r = ckpt(store, d, attempt=2).restore()
        assert (r.files_kept, r.files_indexed, r.bytes_hashed) == (3, 0, 9000), damage
        assert [e["event"] for e in logs if e["event"].startswith("index.")] == ["index.damaged"]


def test_damaged_pages_met_half_way_mean_the_files_are_read(
    tmp_path: Path, store: CountingStore
) -> None:
    """The index is read a range of rows at a time: garbage in its last pages is met only
    part way through a restore. Every file is still restored right, with one warning."""
    d = tmp_path / "d"
    made = make_files(d, 2000, size=10)
    ckpt(store, d).sync_once("first")
    intact = ckpt(store, d, attempt=2).restore()  # rows read a range at a time
    assert (intact.files_indexed, intact.bytes_hashed) == (2000, 0)
    written = index_path(d).stat().st_mtime_ns
    with open(index_path(d), "r+b") as fh:  # its last fifth: past the first range read
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size * 4 // 5)
        fh.write(os.urandom(size - size * 4 // 5))
    os.utime(index_path(d), ns=(written, written))  # garbage that looks as old as the index
    with capture_logs() as logs:
        r = ckpt(store, d, attempt=3).restore()
    assert r.files_kept == 2000 and 0 < r.files_indexed < 2000  # met part way through
    assert {p: (d / p).read_bytes() for p in made} == made
    assert [e["log_level"] for e in logs if e["event"] == "index.damaged"] == ["warning"]


KILLED_WRITER = """
import sys, time
from pathlib import Path
from checkpoint.engine.localdir import indexfile

def rows():
    for i in range(200_000):
        if i == 100_000:  # the new database is half written: say so, and wait for the kill
            Path(sys.argv[2]).write_text("half way")
            time.sleep(600)
        yield f"g{i:06d}", bytes(40), bytes(80)

indexfile.write_rows(Path(sys.argv[1]), (2, "job", 9, "boot"), rows())
"""


def half_way(writer: subprocess.Popen[bytes], flag: Path, d: Path) -> list[Path]:
    """Wait (generously) until ``writer`` says it is half way by creating ``flag``; the
    temporary databases beside the index of ``d`` then."""
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert writer.poll() is None, "the writer ended before it was half way"
        assert time.monotonic() < deadline, "the writer never got half way"
        time.sleep(0.05)
    return list(index_path(d).parent.glob(".index.sqlite.*.tmp"))


def test_an_index_write_killed_half_way_leaves_the_old_index(
    tmp_path: Path, store: CountingStore
) -> None:
    d = tmp_path / "d"
    make_files(d, 5)
    ckpt(store, d).sync_once("first")
    before = index_path(d).read_bytes()
    half = tmp_path / "half"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(d), str(half)], env=env)
    try:
        stale = half_way(writer, half, d)
        assert [p.stat().st_size > 0 for p in stale] == [True]  # the new index, half made
    finally:
        writer.kill()  # SIGKILL: no clean-up runs
        writer.wait()
    assert index_path(d).read_bytes() == before
    r = ckpt(store, d, attempt=2).restore()
    assert (r.files_indexed, r.bytes_hashed) == (5, 0)
    (d / "f000").write_bytes(b"changed")
    os.utime(d / "f000", ns=(OLD, OLD))
    assert ckpt(store, d, attempt=2).sync_once("next").sequence == 2  # writes the index
    assert not stale[0].exists()  # the killed writer's database is swept


def test_damaged_entries_are_never_trusted(tmp_path: Path, store: CountingStore) -> None:
    d = tmp_path / "d"
    make_files(d, 4)
    ckpt(store, d).sync_once("first")
    rows = _rows(d)

    def damage(db: sqlite3.Connection) -> None:
        swap = "UPDATE files SET chunks = ? WHERE path = ?"
        db.execute(swap, (rows["f001"][6], b"f000"))  # each claims the other's bytes
        db.execute(swap, (rows["f000"][6], b"f001"))
        db.execute("UPDATE files SET stat = 'garbage', chunks = 7 WHERE path = x'66303032'")
        _set_stat(db, "f003", ino=rows["f003"][4] + 1)  # another inode

    _edit_index(d, damage)
    r = ckpt(store, d, attempt=2).restore()
    assert (r.files_kept, r.files_indexed, r.bytes_hashed) == (4, 0, 12000)


def test_an_old_json_index_is_ignored(tmp_path: Path, store: CountingStore) -> None:
    """An index.json left by an older agent is never read, never an error; the first new
    index written removes it."""
    d = tmp_path / "d"
    make_files(d, 3)
    ckpt(store, d).sync_once("first")
    old = index_path(d).with_name("index.json")
    index_path(d).rename(old)  # as an older agent left the dir: its index only
    with capture_logs() as logs:
        r = ckpt(store, d, attempt=2).restore()
    assert (r.files_kept, r.files_indexed, r.bytes_hashed) == (3, 0, 9000)
    assert not [e for e in logs if e["event"].startswith("index.")]
    assert index_path(d).is_file() and not old.exists()  # the restore wrote the new one
    r = ckpt(store, d, attempt=3).restore()
    assert (r.files_indexed, r.bytes_hashed) == (3, 0)


def test_an_index_of_another_checkpoint_or_job_is_not_trusted(
    tmp_path: Path, store: CountingStore
) -> None:
    d = tmp_path / "d"
    make_files(d, 3)
    ckpt(store, d).sync_once("first")
    (d / "new").write_bytes(b"x")
    os.utime(d / "new", ns=(OLD, OLD))
    assert ckpt(store, d).sync_once("second").sequence == 2  # the index is checkpoint 2's now
    with capture_logs() as logs:
        r = ckpt(store, d, attempt=2).restore(1)
    assert (r.files_kept, r.files_indexed, r.bytes_hashed) == (3, 0, 9000)
    assert any(e["event"] == "index.not_trusted" for e in logs)

    ckpt(store, d, job="other").sync_once("theirs")  # another job's index over the same dir
    r = ckpt(store, d, attempt=3).restore()
    assert (r.files_kept, r.files_indexed, r.bytes_hashed) == (4, 0, 9001)


def test_racy_files_are_read_again(tmp_path: Path, store: CountingStore) -> None:
    d = tmp_path / "d"
    make_files(d, 3)
    (d / "fresh").write_bytes(b"written just now")  # within the stat cache's racy window
    ckpt(store, d).sync_once("first")
    assert sorted(_rows(d)) == ["f000", "f001", "f002"]
    # An index written in the very tick f001 was last modified (or before) cannot tell a
    # second write within that tick from none: f001 is racy, f000 is older, f002 newer.
    mtime = os.stat(d / "f001").st_mtime_ns
    os.utime(index_path(d), ns=(mtime, mtime))
    r = ckpt(store, d, attempt=2).restore()
    assert (r.files_kept, r.files_indexed) == (4, 0)  # the ctimes are newer than that too
    assert r.bytes_hashed == 3 * 3000 + len(b"written just now")


def test_racy_mtime_alone(tmp_path: Path, store: CountingStore) -> None:
    d = tmp_path / "d"
    make_files(d, 2)
    ckpt(store, d).sync_once("first")
    written = index_path(d).stat().st_mtime_ns
    # Make f001 look modified in the index's tick: its recorded and actual mtime = then.
    os.utime(d / "f001", ns=(written, written))
    st = os.stat(d / "f001")
    _edit_index(d, lambda db: _set_stat(db, "f001", mtime_ns=written, ctime_ns=st.st_ctime_ns))
    os.utime(index_path(d), ns=(written, written))
    with capture_logs():
        r = ckpt(store, d, attempt=2).restore()
    # f001's manifest mtime differs from the file's now: it is put back after a read
    assert r.files_indexed == 1 and r.bytes_hashed == 3000


def test_index_survives_the_freeze_areas_unlinks(tmp_path: Path, store: CountingStore) -> None:
    """The agent's freeze links files into .spot-agent/freeze and removes the links at
    exit (or at the next start, after a kill): each unlink moves the file's ctime."""
    from checkpoint.engine.save.freeze import Freezer
    from checkpoint.engine.save.savepoints import consistent_sync

    d = tmp_path / "d"
    made = make_files(d, 4)
    c = ckpt(store, d)
    freezer = Freezer(d)
    freezer.reset()
    first = consistent_sync(c, freezer, "first", wait=5.0, rehash="never")
    assert first.sequence == 1
    freezer.close()  # the links go: ctimes move
    r = ckpt(store, d, attempt=2).restore()
    assert (r.files_indexed, r.bytes_hashed) == (4, 0)
    assert {p: (d / p).read_bytes() for p in made} == made


def test_presence_listing_stops_when_the_folder_is_mostly_other_objects(
    tmp_path: Path, store: CountingStore
) -> None:
    """Old checkpoints' blobs not yet collected: the listing gives up once it has cost
    more than a HEAD per key still unseen would, and HEADs those."""
    from concurrent.futures import ThreadPoolExecutor

    from checkpoint.engine.restore import presence

    job = JobStore(store, "job")
    for i in range(200):
        store.put_object(job.blob_key(f"{i:064x}"), b"x")
    wanted = {job.blob_key(f"{i:064x}") for i in range(188, 200)}
    absent = job.blob_key("f" * 64)
    with ThreadPoolExecutor(2) as pool:
        # a "page" of one key: small numbers
        stopped = presence.list_folders(job, wanted | {absent}, list_page=1)
        assert not stopped.complete  # 188 others, at most 14 listed before it gives up
        store.calls.clear()
        assert presence.stored_keys(job, wanted | {absent}, pool, stopped) == wanted
        heads = {k for kind, k in store.calls if kind == "HEAD"}
        assert heads == (wanted | {absent}) - stopped.seen and len(store.calls) == len(heads)

        # a listing that went through the whole folder needs no HEAD for what it lacks
        listing = presence.list_folders(job, wanted | {absent}, list_page=1000)
        assert listing.complete == {"job/blobs/"} and listing.seen == wanted
        store.calls.clear()
        assert presence.stored_keys(job, wanted | {absent}, pool, listing) == wanted
        assert store.calls == []
