"""The freeze area across agents (:mod:`checkpoint.engine.save.keptarea`): kept at a clean
exit with no file of the dir unlinked, taken over by the next agent, whose first freeze
adopts its links instead of linking every file again; removed when an agent was killed."""

from __future__ import annotations

import os
from pathlib import Path

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.localdir.indexfile import index_path
from checkpoint.engine.save.freeze import Freezer
from checkpoint.engine.save.savepoints import consistent_sync
from tests.integration.test_final_sync_in_place import ctimes, make
from tests.integration.test_freeze import restored


def area_files(fz: Freezer) -> dict[str, int]:
    """The area's files and their link counts."""
    return {
        str(p.relative_to(fz.area)): p.lstat().st_nlink for p in fz.area.rglob("*") if p.is_file()
    }


def start(src: Path, ckpt: Checkpointer) -> Freezer:
    """As the agent starts (``agent.run.savepoints``): reset, restore, reset."""
    fz = Freezer(src)
    fz.reset(create_lock=False, keep_mark=True, keep_area=True)
    fz.restored(ckpt.restore().files_written)
    fz.reset(keep_area=True)
    return fz


def test_the_exit_keeps_the_area_and_moves_no_ctime(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path, files=30)
    assert consistent_sync(c, fz, "periodic", wait=1.0).sequence == 1
    (src / "d0" / "f0").unlink()  # the area alone holds these old versions now
    (tmp_path / "new").write_bytes(b"replaced")
    (tmp_path / "new").rename(src / "d1" / "f1")
    before = ctimes(src)
    fz.close()
    assert ctimes(src) == before  # no link to a file of the dir was removed
    held = area_files(fz)
    assert len(held) == 28 and set(held.values()) == {2}  # each shares its inode with the dir
    assert "d0/f0" not in held and "d1/f1" not in held
    assert fz.area.with_name("freeze.kept").exists()


def test_the_next_agent_adopts_the_kept_area_without_linking_again(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path, files=30)
    assert consistent_sync(c, fz, "periodic", wait=1.0).sequence == 1
    fz.close()
    warm = Checkpointer(c.job, src)
    fz = start(src, warm)
    assert area_files(fz)  # kept
    assert not fz.area.with_name("freeze.kept").exists()  # a kill from now on leaves none
    (src / "d2" / "f2").unlink()  # gone since: its link in the area goes at the next freeze
    index = index_path(src).stat().st_mtime_ns
    before = ctimes(src)
    result = consistent_sync(warm, fz, "periodic", wait=1.0)
    assert result.sequence == 2 and result.bytes_hashed == 0
    assert ctimes(src) == before  # adopted: not one file linked again
    assert index_path(src).stat().st_mtime_ns != index  # the commit wrote it, no ctime redone
    assert sorted(area_files(fz)) == sorted(before)
    expected = {rel: (src / rel).read_bytes() for rel in sorted(before)}
    assert restored(c, tmp_path, 2) == expected


def test_a_link_to_another_inode_is_not_adopted(tmp_path: Path) -> None:
    """The job replaced a file before the first freeze: the area's link holds the old
    bytes and must not stand for the new ones."""
    src, c, fz = make(tmp_path, files=3)
    assert consistent_sync(c, fz, "periodic", wait=1.0).sequence == 1
    fz.close()
    warm = Checkpointer(c.job, src)
    fz = start(src, warm)
    replaced = src / "d0" / "f0"
    os.link(replaced, tmp_path / "old-inode")  # the job's own second name for it
    (tmp_path / "new").write_bytes(b"new bytes, new inode")
    (tmp_path / "new").rename(replaced)
    result = consistent_sync(warm, fz, "periodic", wait=1.0)
    assert result.sequence == 2
    assert restored(c, tmp_path, 2)["d0/f0"] == b"new bytes, new inode"
    assert (fz.area / "d0" / "f0").stat().st_ino == replaced.stat().st_ino


def test_an_area_left_by_a_killed_agent_is_removed_at_start(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path, files=5)
    assert consistent_sync(c, fz, "periodic", wait=1.0).sequence == 1
    assert area_files(fz)  # killed here: no close, no mark
    fz = start(src, Checkpointer(c.job, src))
    assert not fz.area.exists()


def test_a_restore_that_rewrites_files_lets_go_of_their_old_versions(tmp_path: Path) -> None:
    src, c, fz = make(tmp_path, files=5)
    assert consistent_sync(c, fz, "periodic", wait=1.0).sequence == 1
    fz.close()
    (src / "d1" / "f1").write_bytes(b"changed between two agents")  # same inode
    fz = start(src, Checkpointer(c.job, src))  # the restore puts the checkpoint's back
    held = area_files(fz)
    assert held and set(held.values()) == {2}  # the old inode is not held any more
    assert "d1/f1" not in held
