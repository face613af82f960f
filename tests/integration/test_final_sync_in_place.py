"""The last sync once the job's processes are gone (``consistent_sync(in_place=True)``):
it reads the dir where it is, links nothing into the freeze area (so no file's ctime
moves and the local index stays true), and keeps every check of a freeze: the save-point
lock is held while it reads, a save cut off falls back to the last consistent freeze, and
a file that changes all the same is frozen again."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.localdir.indexfile import index_path
from checkpoint.engine.save.freeze import Freezer
from checkpoint.engine.save.savepoints import consistent_sync
from checkpoint.engine.store.base import LocalStore
from tests.integration.test_freeze import restored

OLD = 1_600_000_000 * 10**9  # far from racy: the local index vouches for such files


def make(tmp: Path, files: int = 0) -> tuple[Path, Checkpointer, Freezer]:
    src = tmp / "src"
    src.mkdir()
    for i in range(files):
        (src / f"d{i % 3}").mkdir(exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(os.urandom(100 + i))
        os.utime(src / f"d{i % 3}" / f"f{i}", ns=(OLD, OLD))
    fz = Freezer(src)
    fz.reset()
    return src, Checkpointer(JobStore(LocalStore(tmp / "store"), "job"), src), fz


def ctimes(src: Path) -> dict[str, int]:
    return {
        str(p.relative_to(src)): p.stat().st_ctime_ns
        for p in src.rglob("*")
        if p.is_file() and ".spot-agent" not in p.parts
    }


def test_in_place_commits_the_dir_and_links_nothing(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path, files=30)
    before = ctimes(src)
    result = consistent_sync(c, fz, "exit", wait=1.0, final=True, in_place=True)
    assert result.sequence == 1 and result.files == 30
    assert restored(c, tmp_path, 1) == {rel: (src / rel).read_bytes() for rel in sorted(before)}
    assert not fz.area.exists()  # nothing was linked: no link to remove at exit either
    assert ctimes(src) == before  # so the index the commit wrote stays true
    assert result.freeze_bytes_held == 0 and fz.pending is None and fz.committed_any


def test_in_place_after_a_warm_restart_rewrites_no_index_when_nothing_changed(
    tmp_path: Path,
) -> None:
    """The exit after a restart with nothing changed: a freeze would link every file (each
    link moves its ctime) and then rewrite the whole index for it; in place, neither."""
    src, c, fz = make(tmp_path, files=30)
    assert consistent_sync(c, fz, "periodic", wait=1.0).sequence == 1
    fz.close()  # the agent exits: the area and its links stay for the next agent
    warm = Checkpointer(c.job, src)
    fz = Freezer(src)
    fz.reset(create_lock=False, keep_mark=True, keep_area=True)  # as the agent starts
    assert warm.restore().files_indexed == 30
    fz.reset(keep_area=True)
    index = index_path(src).stat()
    before = ctimes(src)
    result = consistent_sync(warm, fz, "exit", wait=1.0, final=True, in_place=True)
    assert result.sequence is None and result.bytes_hashed == 0
    assert ctimes(src) == before
    assert index_path(src).stat().st_mtime_ns == index.st_mtime_ns
    assert Checkpointer(c.job, src).restore().files_indexed == 30


def test_in_place_holds_the_save_lock_while_it_reads(tmp_path: Path) -> None:
    _src, c, fz = make(tmp_path, files=3)
    held: list[bool] = []

    def try_lock(_frozen: object) -> None:
        fd = os.open(fz.lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)

    consistent_sync(c, fz, "exit", wait=1.0, final=True, in_place=True, on_frozen=try_lock)
    assert held == [True]
    try_lock(None)  # and released after it
    assert held == [True, False]


def test_in_place_after_a_save_cut_off_commits_the_last_consistent_freeze(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path)
    (src / "a").write_bytes(b"1")
    assert consistent_sync(c, fz, "one", wait=1.0).sequence == 1
    (src / ".tmp").write_bytes(b"2")
    os.replace(src / ".tmp", src / "a")
    assert fz.freeze(1.0) is fz.pending  # consistent, not committed (the store was down)
    fd = os.open(fz.lock_path, os.O_RDWR)
    os.write(fd, b"pid 1\n")  # then a save that was cut off half-way, by a kill
    os.close(fd)
    (src / ".tmp").write_bytes(b"3")
    os.replace(src / ".tmp", src / "a")
    result = consistent_sync(c, fz, "interruption", wait=0.05, final=True, in_place=True)
    assert result.sequence == 2
    assert restored(c, tmp_path, 2) == {"a": b"2"}  # never the half-saved live dir


def test_in_place_commits_nothing_undeclared(tmp_path: Path) -> None:
    """A job that declares its states: with no save point since the last freeze, the
    live dir is not a state to commit, in place or not."""
    src, c, fz = make(tmp_path)
    (src / "a").write_bytes(b"1")
    assert consistent_sync(c, fz, "requested", wait=1.0).sequence == 1
    (src / "a").write_bytes(b"half-way")  # written outside any save point
    result = consistent_sync(
        c, fz, "interruption", wait=0.05, final=True, in_place=True, declared_only=True
    )
    assert result.sequence is None and c.job.sequences() == [1]


def test_a_file_changed_during_an_in_place_sync_is_frozen_again(tmp_path: Path) -> None:
    """Something the job left behind (not seen as its process) writes in place, ignoring
    the lock: the stat after the read shows it, and the next try freezes, copying it."""
    src, c, fz = make(tmp_path)
    (src / "db").write_bytes(b"v1" * 1000)
    writes = iter([b"v2" * 1001])

    def write_once(_frozen: object) -> None:
        for data in writes:
            with open(src / "db", "r+b") as fh:
                fh.write(data)

    result = consistent_sync(
        c, fz, "exit", wait=1.0, final=True, in_place=True, rehash="never", on_frozen=write_once
    )
    assert result.sequence == 1
    assert "db" in fz.copy_paths  # the second try was a freeze, with a copy under the lock
    assert restored(c, tmp_path, 1) == {"db": b"v2" * 1001}
