"""Restore streams chunks into place under the bytes-in-flight bound; upload keeps to it too.

Against SeaweedFS: chunks of 2 MiB arrive in pieces of 256 KiB (``READ_PIECE``), so a
body cut mid-chunk and read again exercises the start-over of a streamed chunk.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import checkpoint.engine.restore.download
import checkpoint.engine.save.upload
from checkpoint.engine.budget import ByteBudget
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import LocalStore, Store
from checkpoint.engine.store.s3 import S3Store
from checkpoint.engine.store.s3.reads import READ_PIECE
from tests.faultproxy import FaultProxy, fault_proxy
from tests.integration.test_sync import tree
from tests.servers import SeaweedS3

CHUNK = 2 << 20
assert CHUNK > READ_PIECE  # each chunk comes in more than one piece


class RecordedBudget(ByteBudget):
    made: list[ByteBudget] = []

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        RecordedBudget.made.append(self)


@pytest.fixture
def budgets(monkeypatch: pytest.MonkeyPatch) -> list[ByteBudget]:
    RecordedBudget.made = []
    monkeypatch.setattr(checkpoint.engine.restore.download, "ByteBudget", RecordedBudget)
    monkeypatch.setattr(checkpoint.engine.save.upload, "ByteBudget", RecordedBudget)
    return RecordedBudget.made


@pytest.fixture
def s3(s3_env: SeaweedS3, s3_bucket: tuple[str, str]) -> Iterator[S3Store]:
    s = S3Store.from_uri(f"s3://{s3_bucket[1]}/t")
    yield s
    s.close()


def make_src(src: Path) -> None:
    src.mkdir()
    (src / "big").write_bytes(os.urandom(5 * CHUNK + 12345))
    (src / "exact").write_bytes(os.urandom(2 * CHUNK))
    (src / "small").write_bytes(b"x" * 100)
    (src / "empty").write_bytes(b"")
    with open(src / "holey", "wb") as fh:  # data, a hole of three chunks, data
        fh.write(os.urandom(CHUNK))
        fh.seek(4 * CHUNK)
        fh.write(os.urandom(777))


def ckpt(store: Store, d: Path, bound: int) -> Checkpointer:
    return Checkpointer(
        JobStore(store, "job"), d, attempt=1, chunk_size=CHUNK, max_bytes_in_flight=bound
    )


@pytest.mark.parametrize("bound", [CHUNK, 3 * CHUNK])
def test_upload_and_restore_from_s3_keep_to_a_small_bound(
    tmp_path: Path, s3: S3Store, budgets: list[ByteBudget], bound: int
) -> None:
    src = tmp_path / "src"
    make_src(src)
    up = ckpt(s3, src, bound)
    assert up.sync_once("one").sequence == 1
    dst = tmp_path / "dst"
    r = ckpt(s3, dst, bound).restore()
    assert r.manifest is not None and r.manifest.sequence == 1
    assert tree(dst) == tree(src)
    assert len(budgets) == 2  # the upload's and the restore's
    assert all(0 < b.peak <= bound and b.held == 0 for b in budgets)
    assert os.stat(dst / "holey").st_blocks * 512 < 2 * CHUNK  # the hole stayed a hole


def test_a_body_cut_mid_chunk_is_read_again_from_its_start(
    tmp_path: Path,
    s3_env: SeaweedS3,
    s3_bucket: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "src"
    make_src(src)
    with fault_proxy(s3_env.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        store = S3Store.from_uri(f"s3://{s3_bucket[1]}/t", max_attempts=4)
        try:
            ckpt(store, src, 64 << 20).sync_once("one")
            proxy.inject("truncate", 3, method="GET", path="/blobs/")  # half a chunk, then cut
            dst = tmp_path / "dst"
            r = ckpt(store, dst, CHUNK).restore()
        finally:
            store.close()
        assert isinstance(proxy, FaultProxy) and proxy.faults == 3
    assert r.manifest is not None and r.manifest.sequence == 1 and not r.skipped
    assert tree(dst) == tree(src)


class Overlong(LocalStore):
    """Hands over a blob's bytes plus more: a store that ignores max_bytes."""

    def get_object_into(self, key, sink, *, max_bytes):  # type: ignore[no-untyped-def]
        data = self.get_object(key)
        sink(0, data + b"\0" * 10 if "/blobs/" in key else data)
        return len(data) + 10


def test_a_chunk_longer_than_its_manifest_says_is_refused_not_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_src(src)
    ckpt(LocalStore(tmp_path / "store"), src, 64 << 20).sync_once("one")
    dst = tmp_path / "dst"
    r = ckpt(Overlong(tmp_path / "store"), dst, 64 << 20).restore()
    assert r.manifest is None and r.skipped  # damaged, passed over: nothing restored
    assert not (dst / "big").exists()


class Streaming(LocalStore):
    """A local store that streams like S3 (pieces of READ_PIECE) and counts fetches at once.

    The first ``together`` blob reads wait on a barrier: they pass only if that many run at
    the same time, so a restore that held a whole chunk per fetch (two under this bound)
    would break it instead of passing.
    """

    stream_piece = READ_PIECE
    concurrency = 4
    together = 3

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.barrier = threading.Barrier(self.together, timeout=60)
        self.waited = 0
        self._lock = threading.Lock()

    def get_object_into(self, key, sink, *, max_bytes):  # type: ignore[no-untyped-def]
        if "/blobs/" in key:
            with self._lock:
                wait, self.waited = self.waited < self.together, self.waited + 1
            if wait:
                self.barrier.wait()
        data = self.get_object(key, max_bytes=max_bytes)
        for pos in range(0, len(data), READ_PIECE):
            sink(pos, data[pos : pos + READ_PIECE])
        return len(data)


def test_a_streamed_chunk_holds_one_piece_of_the_bound(
    tmp_path: Path, budgets: list[ByteBudget]
) -> None:
    src = tmp_path / "src"
    make_src(src)
    bound = 2 * CHUNK  # two whole chunks, four pieces
    assert Streaming.together > bound // CHUNK
    ckpt(LocalStore(tmp_path / "store"), src, bound).sync_once("one")
    store = Streaming(tmp_path / "store")
    dst = tmp_path / "dst"
    r = ckpt(store, dst, bound).restore()
    assert r.manifest is not None and r.manifest.sequence == 1
    assert tree(dst) == tree(src)
    assert not store.barrier.broken  # three chunks were fetched at once
    restore_budget = budgets[-1]
    assert 0 < restore_budget.peak <= bound and restore_budget.held == 0
