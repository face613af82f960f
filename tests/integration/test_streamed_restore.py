"""A paged checkpoint restored into an empty dir a page at a time (issue 23,
checkpoint/engine/restore/streamed.py): the same tree as a whole restore, a damaged page
found before any download, a damaged chunk that leaves the dir as it was, and what cannot
stream (files out of the walk's order, a dir that holds something) restoring whole."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format import page as page_format
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.restore import download, streamed
from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.store.base import LocalStore, Store
from checkpoint.engine.store.s3 import S3Store
from tests.agentproc import AGENT
from tests.crashsync import read_tree
from tests.servers import SeaweedS3
from tests.stores import s3_agent_env

MTIME = 1_600_000_000_123_456_789


def make_source(root: Path) -> None:
    """Files small (packed) and big (several chunks, one of them zeros), nested and empty
    dirs with their own modes, a symlink, a hard link, odd mtimes: every kind a page has."""
    for d in range(4):
        for i in range(6):
            p = root / f"d{d}" / ("deep/" if i % 3 == 0 else "") / f"f{i:02d}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(os.urandom(100 + 37 * i))
            os.utime(p, ns=(MTIME + i, MTIME + i))
    (root / "big.bin").write_bytes(os.urandom(3000) + bytes(4096) + os.urandom(2500))
    (root / "empty").mkdir(mode=0o750)
    (root / "empty").chmod(0o750)
    (root / "d1" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (root / "d1" / "run.sh").chmod(0o755)
    (root / "latest").symlink_to("d2/f01")
    os.link(root / "d3" / "f04", root / "d3" / "same-as-f04")
    (root / "d0").chmod(0o700)


def source(tmp: Path) -> tuple[Path, LocalStore]:
    """A dir of every kind of entry (:func:`make_source`) and an empty local store."""
    src = tmp / "src"
    make_source(src)
    return src, LocalStore(tmp / "store")


def checkpointer(job: JobStore, src: Path) -> Checkpointer:
    """Every checkpoint paged; chunks of 4 KiB, files under 2 KiB packed."""
    return Checkpointer(job, src, paged_above=0, chunk_size=4096, pack_threshold=2048)


def commit(src: Path, store: LocalStore, syncs: int = 1) -> JobStore:
    job = JobStore(store, "streamed")
    ckpt = checkpointer(job, src)
    try:
        for n in range(syncs):
            (src / "counter").write_text(str(n))
            assert ckpt.sync_once(f"sync {n}").sequence == n + 1
    finally:
        ckpt.close()
    return job


def restore(job: JobStore, into: Path, *, stream: bool) -> RestoreResult:
    ckpt = Checkpointer(job, into)
    try:
        return ckpt.restore(streamed=stream)
    finally:
        ckpt.close()


def stats(root: Path) -> dict[str, tuple[int, int]]:
    """Mode and mtime of every entry (the reserved dir left out), links not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".spot-agent"]
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            out[rel] = (st.st_mode, st.st_mtime_ns if stat.S_ISREG(st.st_mode) else 0)
    return out


def staging_left(root: Path) -> list[str]:
    """Staging dirs a restore left in ``root``'s reserved dir."""
    reserved = root / ".spot-agent"
    return (
        [n for n in os.listdir(reserved) if n.startswith("restore-")] if reserved.exists() else []
    )


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pages of about 4 entries and batches of 5 files, so that a small tree spans many of
    both; returns the size of every batch downloaded."""
    monkeypatch.setattr(page_format, "PAGE_BITS", 2)
    monkeypatch.setattr(streamed, "BATCH_FILES", 5)
    sizes: list[int] = []
    real = download.Downloader.download

    def counted(self: download.Downloader, files: list[Any], *args: Any) -> int:
        sizes.append(len(files))
        return real(self, files, *args)

    monkeypatch.setattr(download.Downloader, "download", counted)
    return sizes


def test_a_streamed_restore_gives_what_a_whole_restore_gives(
    tmp_path: Path, small_pages: list[int]
) -> None:
    src, store = source(tmp_path)
    job = commit(src, store)
    pages = job.load_manifest(1).pages
    listed = json.loads(store.get_object(job.manifest_key(1)))["pages"]
    longest = max(p["entries"] for p in listed if p["kind"] == "files")
    assert len(pages) > 5
    small_pages.clear()
    one, whole = tmp_path / "streamed", tmp_path / "whole"
    r = restore(job, one, stream=True)
    assert r.streamed and r.manifest is not None and r.manifest.sequence == 1
    assert r.manifest.files == () and r.manifest.pages == pages
    assert len(small_pages) > 3 and max(small_pages) < 5 + longest  # a batch, never the tree
    files = sum(small_pages)
    assert r.files_written == files == len(job.load_manifest(1).files)
    w = restore(job, whole, stream=False)
    assert not w.streamed and w.manifest is not None and len(w.manifest.files) == files
    assert read_tree(one) == read_tree(whole) == read_tree(src)
    assert stats(one) == stats(whole)
    assert stats(one)["empty"][0] & 0o777 == 0o750 and stats(one)["d0"][0] & 0o777 == 0o700
    assert os.stat(one / "d3" / "f04").st_ino == os.stat(one / "d3" / "same-as-f04").st_ino
    assert staging_left(one) == []


def damage(store_root: Path, key: str) -> None:
    path = store_root / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_page_is_found_before_any_download_and_restore_falls_back(
    tmp_path: Path, small_pages: list[int]
) -> None:
    src, store = source(tmp_path)
    job = commit(src, store, syncs=2)
    only_in_2 = set(job.load_manifest(2).pages) - set(job.load_manifest(1).pages)
    assert only_in_2
    for pid in only_in_2:
        damage(tmp_path / "store", job.page_key(pid))
    small_pages.clear()
    into = tmp_path / "restored"
    with capture_logs() as logs:
        r = restore(job, into, stream=True)
    assert r.manifest is not None and r.manifest.sequence == 1 and r.streamed
    assert [seq for seq, _ in r.skipped] == [2] and "damaged" in r.skipped[0][1]
    events = [e["event"] for e in logs]
    assert "restore.checkpoint_damaged" in events and "restore.manifest_retry" in events
    assert sum(small_pages) == r.files_written  # checkpoint 2 downloaded nothing
    assert (into / "counter").read_text() == "0"


class FlipsFirstPageRead(LocalStore):
    """A local store whose first read of each page comes back with one byte flipped (a
    page damaged in flight); reads after it are whole."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.flipped: set[str] = set()

    def get_object(self, key: str, *, max_bytes: int | None = None) -> bytes:
        data = super().get_object(key, max_bytes=max_bytes)
        if "/pages/" not in key or key in self.flipped:
            return data
        self.flipped.add(key)
        return data[:-1] + bytes([data[-1] ^ 0xFF])


def test_a_page_damaged_in_flight_is_read_again_once_and_its_good_bytes_kept(
    tmp_path: Path, small_pages: list[int]
) -> None:
    src, store = source(tmp_path)
    commit(src, store)
    job = JobStore(FlipsFirstPageRead(tmp_path / "store"), "streamed")
    into = tmp_path / "restored"
    with capture_logs() as logs:
        r = restore(job, into, stream=True)
    assert r.streamed and not r.skipped and read_tree(into) == read_tree(src)
    retried = [e["page"] for e in logs if e["event"] == "restore.manifest_retry"]
    # once per page, in the first pass: the second reads back the bytes that matched
    assert sorted(retried) == sorted(r.manifest.pages if r.manifest else ())


def test_a_damaged_chunk_leaves_the_dir_as_it_was_and_restore_falls_back(
    tmp_path: Path, small_pages: list[int]
) -> None:
    src, store = source(tmp_path)
    job = JobStore(store, "streamed")
    ckpt = checkpointer(job, src)
    try:
        (src / "counter").write_text("0")
        assert ckpt.sync_once("first").sequence == 1
        (src / "late.bin").write_bytes(os.urandom(9000))  # blobs of its own, only in 2
        (src / "counter").write_text("1")
        assert ckpt.sync_once("second").sequence == 2
    finally:
        ckpt.close()
    late = next(f for f in job.load_manifest(2).files if f.path == "late.bin")
    damage(tmp_path / "store", job.blob_key(late.chunks[-1].digest))
    into = tmp_path / "restored"
    r = restore(job, into, stream=True)
    assert r.manifest is not None and r.manifest.sequence == 1 and r.streamed
    assert [seq for seq, _ in r.skipped] == [2]
    assert sum(small_pages) > r.files_written  # checkpoint 2's files were downloaded...
    assert not (into / "late.bin").exists() and (into / "counter").read_text() == "0"
    assert read_tree(into).files.keys() == read_tree(src).files.keys() - {"late.bin"}
    assert staging_left(into) == []  # ...and left nothing behind


def test_files_out_of_the_walk_order_restore_whole(tmp_path: Path, small_pages: list[int]) -> None:
    """No agent writes such a root; one that does (forged, or a bug) cannot be checked in
    one pass, so it restores whole, with the checks that hold every path."""
    src, store = source(tmp_path)
    job = commit(src, store)
    swap_files_pages(store, job.manifest_key(1))
    into = tmp_path / "restored"
    with capture_logs() as logs:
        r = restore(job, into, stream=True)
    assert r.manifest is not None and not r.streamed and not r.skipped
    assert "restore.not_streamed" in [e["event"] for e in logs]
    assert read_tree(into) == read_tree(src)


def test_a_dir_that_holds_something_restores_whole(tmp_path: Path) -> None:
    src, store = source(tmp_path)
    job = commit(src, store)
    into = tmp_path / "restored"
    into.mkdir()
    (into / "d0").mkdir()
    r = restore(job, into, stream=True)
    assert r.manifest is not None and not r.streamed
    assert read_tree(into) == read_tree(src)


def swap_files_pages(store: Store, key: str) -> None:
    """Rewrite the root at ``key`` with its first and last pages of files swapped: every
    page still matches its hash, but the files are out of the walk's order."""
    doc = json.loads(store.get_object(key))
    files = [i for i, p in enumerate(doc["pages"]) if p["kind"] == "files"]
    a, b = files[0], files[-1]
    doc["pages"][a], doc["pages"][b] = doc["pages"][b], doc["pages"][a]
    store.put_object(key, json.dumps(doc).encode())


def test_checkpoints_restore_streams_a_paged_checkpoint_from_s3(
    tmp_path: Path, s3_env: SeaweedS3, s3_bucket: tuple[str, str]
) -> None:
    """Through the CLI, on SeaweedFS: every byte comes back. That it streamed shows in what
    it does not say: a checkpoint it cannot stream (its root forged) says so."""
    assert s3_bucket[0] == s3_env.endpoint  # loopback only
    src = tmp_path / "src"
    make_source(src)
    for d in range(3):  # enough entries to be paged at the default bound
        (src / f"many{d}").mkdir()
        for i in range(800):
            (src / f"many{d}" / f"x{i:04d}").write_bytes(b"%d.%d" % (d, i))
    uri = f"s3://{s3_bucket[1]}/cli"
    env = s3_agent_env(tmp_path, s3_env, uri)

    def cli_restore(into: Path) -> str:
        argv = [*AGENT, "checkpoints", "restore", "--job-id", "cli-streamed", "--to", str(into)]
        r = subprocess.run(
            argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300
        )
        assert r.returncode == 0, r.stderr
        assert "restored checkpoint 1" in r.stdout
        assert read_tree(into) == read_tree(src)
        return r.stdout + r.stderr

    store = S3Store.from_uri(uri)
    try:
        job = JobStore(store, "cli-streamed")
        ckpt = Checkpointer(job, src)
        try:
            assert ckpt.sync_once("first").sequence == 1
        finally:
            ckpt.close()
        assert len(job.load_manifest(1).pages) > 1
        assert "restore.not_streamed" not in cli_restore(tmp_path / "streamed")
        swap_files_pages(store, job.manifest_key(1))
        assert "restore.not_streamed" in cli_restore(tmp_path / "whole")
    finally:
        store.close()
