"""The pieces behind "the dir is exactly a checkpoint", against real files and the local
store: what a restore sets aside, a dead saver's mark, and declared-only freezes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import checkpoint
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.restore.aside import aside_area, set_aside
from checkpoint.engine.save.freeze import Freezer, NotDeclared
from checkpoint.engine.save.savepoints import consistent_sync
from checkpoint.engine.store.base import LocalStore
from checkpoint.savelock import SaveIncomplete, begin_save


def make(tmp: Path) -> tuple[Path, Checkpointer, Freezer]:
    src = tmp / "src"
    src.mkdir()
    return src, Checkpointer(JobStore(LocalStore(tmp / "store"), "job"), src), Freezer(src)


def test_set_aside_moves_every_entry_the_checkpoint_lacks(tmp_path: Path) -> None:
    src, c, _ = make(tmp_path)
    (src / "keep").mkdir()
    (src / "keep" / "a").write_bytes(b"a")
    os.symlink("a", src / "keep" / "link")
    c.sync_once("test")
    # Then a save that is never committed: a new dir, a file beside a kept one, a
    # temporary file, an empty dir and a symlink that leads out (moved, never followed).
    (src / "ckpt-2").mkdir()
    (src / "ckpt-2" / "model").write_bytes(b"torn")
    (src / "keep" / "new").write_bytes(b"new")
    (src / "keep" / ".a.x.spot-tmp").write_bytes(b"tmp")
    (src / "empty").mkdir()
    os.symlink("/etc", src / "escape")
    (src / ".spot-agent").mkdir(exist_ok=True)
    (src / ".spot-agent" / "mine").write_bytes(b"agent's")

    moved = set_aside(src, c.base)  # type: ignore[arg-type]
    assert (moved.entries, moved.files, moved.deleted) == (5, 4, 0)
    left = sorted(str(p.relative_to(src)) for p in src.rglob("*") if ".spot-agent" not in p.parts)
    assert left == ["keep", "keep/a", "keep/link"]
    area = aside_area(src)
    assert (area / "ckpt-2" / "model").read_bytes() == b"torn"
    assert (area / "keep" / "new").read_bytes() == b"new"
    assert (src / ".spot-agent" / "mine").exists()

    # Bounded: the next restore that moves something replaces what the last one moved.
    (src / "again").write_bytes(b"x")
    assert set_aside(src, c.base).entries == 1  # type: ignore[arg-type]
    assert sorted(p.name for p in area.iterdir()) == ["again"]
    assert set_aside(src, c.base).entries == 0  # type: ignore[arg-type]
    assert (area / "again").exists()  # nothing to move: the last leftovers stay


def test_dead_savers_mark_survives_reset_when_kept_and_blocks_every_freeze(
    tmp_path: Path,
) -> None:
    src, c, fz = make(tmp_path)
    fz.reset()
    fd = os.open(fz.lock_path, os.O_RDWR)
    begin_save(fd)  # a saver that dies here: the lock goes, the mark stays
    os.close(fd)
    assert fz.cut_off() == f"pid {os.getpid()}"
    fz.reset(keep_mark=True)
    assert fz.cut_off() is not None
    with pytest.raises(SaveIncomplete):
        consistent_sync(c, fz, "periodic", wait=1.0, rehash="never")
    os.environ["CHECKPOINT_DIR"] = str(src)
    os.environ["SPOT_AGENT_LOCK_FILE"] = str(fz.lock_path)
    try:
        with checkpoint.saving():  # the job's next whole save clears it
            checkpoint.save_bytes("state", b"whole")
    finally:
        del os.environ["CHECKPOINT_DIR"], os.environ["SPOT_AGENT_LOCK_FILE"]
    assert fz.cut_off() is None
    assert consistent_sync(c, fz, "periodic", wait=1.0, rehash="never").sequence == 1
    fz.reset()
    assert fz.cut_off() is None  # without keep_mark, reset empties a mark


def test_declared_only_freezes_only_after_a_save_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, c, fz = make(tmp_path)
    monkeypatch.setenv("CHECKPOINT_DIR", str(src))
    monkeypatch.setenv("SPOT_AGENT_LOCK_FILE", str(src / ".spot-agent" / "save.lock"))
    fz.reset()
    (src / "a").write_bytes(b"1")
    first = consistent_sync(c, fz, "requested", wait=1.0, rehash="never")
    assert first.sequence == 1
    checkpoint.save_bytes("a", b"2")  # one file's atomic write: no save point
    with pytest.raises(NotDeclared):
        fz.freeze(1.0, declared_only=True)
    assert (
        consistent_sync(c, fz, "periodic", wait=1.0, rehash="never", declared_only=True).sequence
        is None
    )
    time.sleep(0.02)  # past the filesystem's timestamp granularity
    with checkpoint.saving():
        checkpoint.save_bytes("b", b"2")
    assert (
        consistent_sync(c, fz, "periodic", wait=1.0, rehash="never", declared_only=True).sequence
        == 2
    )
