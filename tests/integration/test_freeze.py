"""The freeze and the sync hardening, against the local store and real files.

A save that holds the lock is never frozen half-way; files written in place after a freeze
are copied under the lock at the next one; a file appended to non-stop is left out (its
last committed version kept) while the rest commits; a FIFO that replaced a file never
blocks a sync; files written through mmap are read again under ``--rehash open``.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import checkpoint
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.config import EngineConfig
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.localdir.scan import hash_file, scan
from checkpoint.engine.save.entries import FrozenFilesChanged
from checkpoint.engine.save.freeze import Freezer
from checkpoint.engine.save.savepoints import consistent_sync, writable_inodes
from checkpoint.engine.store.base import LocalStore
from checkpoint.savelock import SaveIncomplete, SaveInProgress


def make(tmp: Path) -> tuple[Path, Checkpointer, Freezer]:
    src = tmp / "src"
    src.mkdir()
    return src, Checkpointer(JobStore(LocalStore(tmp / "store"), "job"), src), Freezer(src)


def restored(c: Checkpointer, tmp: Path, seq: int) -> dict[str, bytes]:
    into = tmp / f"r{seq}"
    Checkpointer(c.job, into).restore(seq, into=into)
    return {
        str(p.relative_to(into)): p.read_bytes()
        for p in sorted(into.rglob("*"))
        if p.is_file() and ".spot-agent" not in p.parts
    }


def test_freeze_reads_the_save_point_while_the_job_goes_on(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path)
    fz.reset()
    (src / "a").write_bytes(b"a1")
    (src / "d").mkdir()
    (src / "d" / "b").write_bytes(b"b1")
    frozen = fz.freeze(1.0)
    # After the freeze the job replaces both files (temp file + rename): the sync still
    # reads the frozen state.
    for rel, data in (("a", b"a2"), ("d/b", b"b2")):
        (src / f"{rel}.tmp").write_bytes(data)
        os.replace(src / f"{rel}.tmp", src / rel)
    result = c.sync_once("test", frozen=frozen)
    assert result.sequence == 1
    assert restored(c, tmp_path, 1) == {"a": b"a1", "d/b": b"b1"}
    assert fz.held_bytes() > 0  # the area keeps the two replaced inodes alive
    fz.committed()
    assert fz.held_bytes() == 0


def test_no_freeze_while_a_save_holds_the_lock_nor_after_a_save_cut_off(tmp_path: Path) -> None:
    _src, _c, fz = make(tmp_path)
    fz.reset()
    fd = os.open(fz.lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 1\n")  # a save under way ...
    with pytest.raises(SaveInProgress):
        fz.freeze(0.05)
    os.close(fd)  # ... whose process dies: the lock goes, the mark stays
    with pytest.raises(SaveIncomplete):
        fz.freeze(0.05)
    fz.reset()
    fz.freeze(0.05)


def test_api_save_point_marks_and_clears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _c, fz = make(tmp_path)
    fz.reset()
    monkeypatch.setenv("CHECKPOINT_DIR", str(src))
    monkeypatch.setenv("SPOT_AGENT_LOCK_FILE", str(fz.lock_path))
    with checkpoint.saving():
        checkpoint.save_bytes("x", b"1")  # nested: part of the same save
        assert fz.lock_path.read_bytes().startswith(b"pid ")
        with pytest.raises(SaveInProgress):
            fz.freeze(0.02)
    assert fz.lock_path.read_bytes() == b""
    with pytest.raises(RuntimeError), checkpoint.saving():
        raise RuntimeError("a save that fails half-way")
    with pytest.raises(SaveIncomplete):
        fz.freeze(0.02)


def test_in_place_writer_after_the_freeze_is_copied_under_the_lock(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path)
    fz.reset()
    (src / "db").write_bytes(b"v1" * 1000)
    (src / "other").write_bytes(b"o1")
    frozen = fz.freeze(1.0)
    with open(src / "db", "r+b") as fh:  # same inode, new bytes, after the freeze
        fh.write(b"v2" * 1001)
    with pytest.raises(FrozenFilesChanged):
        c.sync_once("test", frozen=frozen)
    writes = iter([b"v3" * 1002])

    def write_in_place_once(_frozen: object) -> None:
        for data in writes:  # right after the first freeze only
            with open(src / "db", "r+b") as fh:
                fh.write(data)

    result = consistent_sync(c, fz, "test", wait=1.0, rehash="never", on_frozen=write_in_place_once)
    assert result.sequence == 1 and result.left_out == ()
    assert "db" in fz.copy_paths  # frozen again, this time by a copy under the lock
    assert restored(c, tmp_path, 1) == {"db": b"v3" * 1002, "other": b"o1"}


def test_a_file_appended_to_nonstop_is_left_out_and_the_rest_commits(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path)
    fz.reset()
    (src / "log").write_bytes(b"line\n")
    (src / "state").write_bytes(b"s1")
    assert c.sync_once("first").sequence == 1
    (src / "state").write_bytes(b"s2")
    stop = threading.Event()

    def append() -> None:  # a chatty log: small lines, often, never more than 8 MiB
        with open(src / "log", "ab", buffering=0) as fh:
            for _ in range(8 << 10):
                if stop.is_set():
                    return
                fh.write(b"x" * 1023 + b"\n")
                time.sleep(0.0005)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        live = c.sync_once("live")  # no freeze: the fallback of issue 16 item 6
        frozen = consistent_sync(c, fz, "frozen", wait=1.0, rehash="never")
    finally:
        stop.set()
        writer.join()
    for result in (live, frozen):
        assert result.sequence is None or "log" in result.left_out or result.left_out == ()
    state = restored(c, tmp_path, c.job.sequences()[-1])
    assert state["state"] == b"s2"
    assert state["log"].startswith(b"line\n")  # a whole version: the last committed, at worst


def test_a_file_replaced_by_a_fifo_after_the_scan_does_not_hang(tmp_path: Path) -> None:
    src, c, _fz = make(tmp_path)
    (src / "f").write_bytes(b"data")
    (src / "g").write_bytes(b"more")
    stale = scan(src)
    os.unlink(src / "f")
    os.mkfifo(src / "f")
    c.scan = lambda _root: stale  # type: ignore[assignment]
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(c.sync_once("fifo")), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the sync blocked opening a FIFO"
    assert restored(c, tmp_path, 1) == {"g": b"more"}


def test_writes_through_mmap_are_read_again_under_rehash_open(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path)
    fz.reset()
    path = src / "table"
    path.write_bytes(b"\0" * 4096)
    old = time.time() - 3600
    os.utime(path, (old, old))
    with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 4096) as mm:
        mm[:5] = b"first"
        consistent_sync(c, fz, "one", wait=1.0, rehash="open", pids=lambda: [os.getpid()])
        assert (os.stat(path).st_dev, os.stat(path).st_ino) in writable_inodes([os.getpid()])
        mm[:6] = b"second"  # the page is dirty already: the stat may well not change
        result = consistent_sync(c, fz, "two", wait=1.0, rehash="open", pids=lambda: [os.getpid()])
    assert result.sequence is not None
    assert restored(c, tmp_path, result.sequence)["table"].startswith(b"second")


def test_final_sync_of_a_save_cut_off_commits_the_last_consistent_freeze(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path)
    fz.reset()
    (src / "a").write_bytes(b"1")
    (src / "b").write_bytes(b"1")
    assert consistent_sync(c, fz, "one", wait=1.0).sequence == 1
    for name in ("a", "b"):  # the job replaces its files whole (temp file and rename)
        (src / ".tmp").write_bytes(b"2")
        os.replace(src / ".tmp", src / name)
    frozen = fz.freeze(1.0)  # a consistent freeze whose sync did not happen (store down)
    assert frozen is fz.pending
    fd = os.open(fz.lock_path, os.O_RDWR)
    os.write(fd, b"pid 1\n")  # then a save that was cut off half-way
    os.close(fd)
    (src / ".tmp").write_bytes(b"3")
    os.replace(src / ".tmp", src / "a")
    result = consistent_sync(c, fz, "interruption", wait=0.05, final=True)
    assert result.sequence == 2
    assert restored(c, tmp_path, 2) == {"a": b"2", "b": b"2"}
    # Nothing newer is consistent: the final sync has nothing to commit, and says so
    # (an interrupted agent then exits 75: its last consistent state is committed).
    again = consistent_sync(c, fz, "interruption", wait=0.05, final=True)
    assert again.sequence is None and c.job.sequences() == [1, 2]


def test_stale_freeze_area_is_removed_at_start(tmp_path: Path) -> None:
    src, _c, fz = make(tmp_path)
    fz.reset()
    (src / "big").write_bytes(os.urandom(100_000))
    fz.freeze(1.0)
    os.unlink(src / "big")  # only the area holds it now, as after a kill -9 of the agent
    assert Freezer(src).reset() >= 100_000
    assert not fz.area.exists()


def test_a_file_that_changes_at_every_read_is_left_out_keeping_its_last_version(
    tmp_path: Path,
) -> None:
    src, c, _fz = make(tmp_path)
    (src / "log").write_bytes(b"v1")
    (src / "state").write_bytes(b"s1")
    assert c.sync_once("first").sequence == 1
    (src / "log").write_bytes(b"v2")
    (src / "state").write_bytes(b"s2")
    reads = iter(range(1, 100))

    def always_changing(path: Path, *args: object) -> tuple[object, object]:
        chunks, stat_after = hash_file(path, *args)  # type: ignore[arg-type]
        after: object = stat_after
        if path.name == "log":  # as if appended to during every read
            fields = ("st_size", "st_mode", "st_ino", "st_ctime_ns", "st_mtime_ns")
            moved = {f: getattr(stat_after, f) for f in fields}
            after = SimpleNamespace(
                **{**moved, "st_mtime_ns": stat_after.st_mtime_ns + next(reads)}
            )
        return chunks, after

    c.hash_file = always_changing  # type: ignore[assignment]
    result = c.sync_once("second")
    assert result.sequence == 2 and result.left_out == ("log",)
    assert restored(c, tmp_path, 2) == {"log": b"v1", "state": b"s2"}


def test_a_save_that_holds_the_lock_long_is_reported_and_waited_for(tmp_path: Path) -> None:
    src, _c, _fz = make(tmp_path)
    fz = Freezer(src, config=EngineConfig(long_save_seconds=0.05))
    fz.reset()
    fd = os.open(fz.lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(0.3, os.close, args=(fd,)).start()  # the save ends after 0.3 s
    waited: list[float] = []
    frozen = fz.freeze(30, waiting=waited.append)
    assert len(waited) == 1 and waited[0] >= 0.05
    assert list(frozen.files) == []
