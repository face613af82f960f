"""The job's writers, watched across a run (issue 23): a file the job mapped for writing
since the last sync is read again by the next one, even once the map is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from checkpoint.engine.save.savepoints import writable_inodes
from checkpoint.engine.save.writers import Inode, WriterWatch

MAPPER = """
import mmap, sys
with open(sys.argv[1], "r+b") as fh, mmap.mmap(fh.fileno(), 4096) as mm:
    mm[:6] = b"mapped"
    print("mapped", flush=True)
    sys.stdin.readline()
print("closed", flush=True)
sys.stdin.readline()
"""


def start_mapper(path: Path) -> subprocess.Popen[str]:
    path.write_bytes(bytes(4096))
    child = subprocess.Popen(
        [sys.executable, "-c", MAPPER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "mapped\n"
    return child


def step(child: subprocess.Popen[str], expect: str) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.stdout.readline() == expect


def test_a_map_seen_by_a_sample_is_read_by_the_next_sync_after_it_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "table"
    child = start_mapper(path)
    try:
        st = os.stat(path)
        inode = (st.st_dev, st.st_ino)
        samples: list[set[Inode]] = []
        sampled = threading.Event()

        def writers() -> set[Inode]:
            found = writable_inodes([child.pid])
            samples.append(found)
            if inode in found:
                sampled.set()
            return found

        watch = WriterWatch(writers, interval=0.02)
        watch.start()
        try:
            assert sampled.wait(60), "the watch never sampled the job's map"
        finally:
            watch.stop()
        step(child, "closed\n")
        assert inode not in writable_inodes([child.pid])  # gone from /proc...
        seen = watch.begin()
        assert inode in seen  # ...but the sync that begins now reads it again
        assert inode not in watch.begin()  # that sync committed it: the next one trusts stat
        watch.failed(seen)  # unless it did not commit
        assert inode in watch.begin()
    finally:
        child.kill()
        child.wait()


def test_a_writer_still_open_when_a_sync_begins_is_read_by_the_one_after_too(
    tmp_path: Path,
) -> None:
    """It may write again once this sync has read it: the next sync reads it again even if
    the map is gone by then (the job stopped before the final sync)."""
    path = tmp_path / "table"
    child = start_mapper(path)
    try:
        st = os.stat(path)
        watch = WriterWatch(lambda: writable_inodes([child.pid]))
        assert (st.st_dev, st.st_ino) in watch.begin()
        step(child, "closed\n")
        assert (st.st_dev, st.st_ino) not in writable_inodes([child.pid])
        assert (st.st_dev, st.st_ino) in watch.begin()
        assert (st.st_dev, st.st_ino) not in watch.begin()
    finally:
        child.kill()
        child.wait()


WRITER = """
import mmap, os, sys, time
path = sys.argv[1]
old = time.time() - 3600
with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 4096) as mm:
    mm[:5] = b"first"
    os.utime(path, (old, old))  # old enough for the stat cache to vouch for it
    print("first", flush=True)
    sys.stdin.readline()
    mm[:6] = b"second"  # the page is dirty already: size and times do not change
print("second", flush=True)
sys.stdin.readline()
"""


def test_final_sync_reads_a_file_mapped_since_the_last_sync_and_nothing_else(
    tmp_path: Path,
) -> None:
    """The agent's checkpoints on a dir it cannot freeze (no hard links there): the job
    wrote table through a map after the last sync and unmapped it before the final one. The
    final sync reads table again, and trusts the stat of big."""
    from agent.run.savepoints import SavePointCheckpoints
    from checkpoint.engine.checkpointer import Checkpointer
    from checkpoint.engine.format.jobstore import JobStore
    from checkpoint.engine.store.base import LocalStore

    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(1 << 20))
    os.utime(src / "big", (1_600_000_000, 1_600_000_000))
    (src / "table").write_bytes(bytes(4096))
    job = JobStore(LocalStore(tmp_path / "store"), "watched")
    ckpt = Checkpointer(job, src)
    checkpoints = SavePointCheckpoints(ckpt, src, "open")
    checkpoints.freezer.usable = False  # as on a filesystem without hard links
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(src / "table")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "first\n"
        checkpoints.attach(lambda: [child.pid], lambda _taken: None)
        assert checkpoints.sync_once("requested").sequence == 1
        step(child, "second\n")  # written, and the map gone
        result = checkpoints.sync_once("interruption")
    finally:
        child.kill()
        child.wait()
        checkpoints.close()
    assert result.sequence == 2
    assert result.bytes_hashed == 4096  # table alone
    into = tmp_path / "restored"
    assert Checkpointer(job, into).restore(2, into=into).manifest is not None
    assert (into / "table").read_bytes()[:6] == b"second"
    assert (into / "big").read_bytes() == (src / "big").read_bytes()
