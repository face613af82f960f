"""The local index after a commit: the rows of what changed, not every row again.

A commit rewrites only the rows of the paths the stat cache says changed since the index
was last written (``StatCache.changes``, ``localindex.write_index(since=...)``), on a copy
of the index renamed over it. What it leaves must be exactly what a whole rewrite would
write: every step below compares the two.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.localdir import indexfile, localindex
from checkpoint.engine.localdir.indexfile import index_path
from tests.integration.test_warm_restart import (
    OLD,
    REPO,
    CountingStore,
    ckpt,
    half_way,
    make_files,
)

Rows = dict[bytes, tuple[bytes, bytes]]


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def on_disk(d: Path) -> tuple[int, Rows]:
    """The index's sequence and rows."""
    with contextlib.closing(sqlite3.connect(index_path(d))) as db:
        (sequence,) = db.execute("SELECT sequence FROM head").fetchone()
        rows = db.execute("SELECT path, stat, chunks FROM files").fetchall()
    return sequence, {p: (st, chunks) for p, st, chunks in rows}


def rewritten(c: Checkpointer) -> Rows:
    """The rows a whole rewrite would write for the newest commit, from the same cache."""
    assert c.base is not None
    return {p: (st, chunks) for p, st, chunks in localindex._rows(c.base.files, c._cache)}


def rewrite(path: Path, data: bytes, mtime_ns: int = OLD) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_commit_of_one_changed_file_writes_its_row_alone(
    tmp_path: Path, store: CountingStore, boot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "d"
    made = make_files(d / "many", 300)
    c = ckpt(store, d, boot=boot)
    assert c.sync_once("first").sequence == 1
    rows_made: list[int] = []
    real = localindex.chunk_bytes
    monkeypatch.setattr(
        localindex, "chunk_bytes", lambda chunks: rows_made.append(1) or real(chunks)
    )
    made["f007"] = os.urandom(3000)
    rewrite(d / "many" / "f007", made["f007"])
    assert c.sync_once("second").sequence == 2
    assert len(rows_made) == 1  # was 300: every row written again
    assert on_disk(d) == (2, rewritten(c))
    monkeypatch.undo()
    r = ckpt(store, d, attempt=2, boot=boot).restore()
    assert (r.files_indexed, r.bytes_hashed, r.files_written) == (300, 0, 0)
    assert {p: (d / "many" / p).read_bytes() for p in made} == made


def test_every_kind_of_change_leaves_the_rows_a_rewrite_would(
    tmp_path: Path, store: CountingStore, boot: Path
) -> None:
    """Changed, added, deleted (enough to repack), chmod-ed, touched, renamed and racy
    files, over twelve commits of one agent; then a warm restart on the index."""
    rng = random.Random(23)
    d = tmp_path / "d"
    make_files(d / "a", 120, size=500)  # small: packed, so deletes make packs sparse
    make_files(d / "b", 8, size=1_500_000)  # not packed: 23 chunks each
    c = ckpt(store, d, boot=boot)
    assert c.sync_once("first").sequence == 1
    assert on_disk(d) == (1, rewritten(c))
    added = repacked = 0
    for step in range(12):
        files = sorted(p for p in d.rglob("f*") if p.is_file())
        kind = ["change", "add", "delete", "chmod", "touch", "rename", "racy"][step % 7]
        if kind == "delete":  # most of the small files: their pack turns sparse
            small = [p for p in files if p.parent.name == "a"]
            picked = rng.sample(small, len(small) * 2 // 3)
        else:
            picked = rng.sample(files, 3)
        for p in picked:
            if kind == "change":
                rewrite(p, os.urandom(p.stat().st_size or 1))
            elif kind == "add":
                added += 1
                rewrite(p.parent / f"f9{added:03d}", os.urandom(700))
            elif kind == "delete":
                p.unlink()
            elif kind == "chmod":
                p.chmod(0o600)
            elif kind == "touch":  # the same bytes, a new mtime: read again, same chunks
                os.utime(p, ns=(OLD + 7 * step, OLD + 7 * step))
            elif kind == "rename":
                p.rename(p.with_name(p.name + "r"))
            else:  # written just now: the cache keeps no row for it, nor may the index
                p.write_bytes(os.urandom(900))
        with capture_logs() as logs:
            result = c.sync_once(f"step {step}")
        repacked += sum(e["event"] == "sync.repacked" for e in logs)
        assert result.sequence is not None, kind  # every step changes the checkpoint
        assert on_disk(d) == (result.sequence, rewritten(c)), kind
    assert repacked  # a pack's chunks moved: their files' rows changed, not their bytes
    time.sleep(2.1)  # the racy files are old enough now: the last sync remembers them
    for p in d.rglob("f*"):
        os.utime(p, ns=(OLD, OLD))
    last = c.sync_once("last")
    assert last.sequence is not None
    assert on_disk(d) == (last.sequence, rewritten(c))
    c.close()
    expect = {p: p.read_bytes() for p in d.rglob("f*")}
    r = ckpt(store, d, attempt=2, boot=boot).restore()
    assert (r.files_indexed, r.bytes_hashed, r.files_written) == (len(expect), 0, 0)
    assert {p: p.read_bytes() for p in d.rglob("f*")} == expect


def test_an_index_not_the_one_written_last_is_written_whole(
    tmp_path: Path, store: CountingStore, boot: Path
) -> None:
    """Removed, or replaced by another checkpoint's: never patched, written anew."""
    d = tmp_path / "d"
    make_files(d, 50)
    c = ckpt(store, d, boot=boot)
    assert c.sync_once("first").sequence == 1
    index_path(d).unlink()
    rewrite(d / "f001", b"one")
    assert c.sync_once("second").sequence == 2
    assert on_disk(d) == (2, rewritten(c))
    assert len(rewritten(c)) == 50
    with contextlib.closing(sqlite3.connect(index_path(d), isolation_level=None)) as db:
        db.execute("UPDATE head SET sequence = 9")  # someone else's index now
        db.execute("DELETE FROM files")
    rewrite(d / "f002", b"two")
    assert c.sync_once("third").sequence == 3
    assert on_disk(d) == (3, rewritten(c))
    assert len(rewritten(c)) == 50


KILLED_UPDATE = """
import sys, time
from pathlib import Path
from checkpoint.engine.localdir import indexfile

def rows():
    Path(sys.argv[3]).write_text("half way")  # the copy is made: wait for the kill
    time.sleep(600)
    yield b"f000", bytes(40), b""

d, head = Path(sys.argv[1]), tuple(sys.argv[2].split(","))
head = (int(head[0]), head[1], int(head[2]), head[3])
indexfile.update_rows(d, (head[0], head[1], head[2] + 1, head[3]), head, rows(), [])
"""


def test_an_update_killed_half_way_leaves_the_old_index(
    tmp_path: Path, store: CountingStore, boot: Path
) -> None:
    d = tmp_path / "d"
    made = make_files(d, 20)
    assert ckpt(store, d, boot=boot).sync_once("first").sequence == 1
    before = index_path(d).read_bytes()
    head = ",".join(map(str, (indexfile.FORMAT, "job", 1, boot.read_text().strip())))
    half = tmp_path / "half"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", KILLED_UPDATE, str(d), head, str(half)]
    updater = subprocess.Popen(argv, env=env)
    try:
        stale = half_way(updater, half, d)
        assert [p.stat().st_size for p in stale] == [len(before)]  # the copy, not changed
    finally:
        updater.kill()  # SIGKILL: no clean-up runs
        updater.wait()
    assert index_path(d).read_bytes() == before
    r = ckpt(store, d, attempt=2, boot=boot).restore()
    assert (r.files_indexed, r.bytes_hashed) == (20, 0)
    assert {p: (d / p).read_bytes() for p in made} == made
    c = ckpt(store, d, attempt=2, boot=boot)
    c.restore()
    rewrite(d / "f000", b"changed")
    assert c.sync_once("next").sequence == 2  # the index, updated
    assert on_disk(d) == (2, rewritten(c))
    assert not stale[0].exists()  # the killed updater's copy is swept
