"""Groups on SeaweedFS (127.0.0.1): parts of two ranks, the record, restore of the union,
and what ``doctor`` says of the group."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import GroupSettings
from agent.group.checkpoints import GroupCheckpoints
from agent.group.listing import check_group
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.group import Group, RankStore
from checkpoint.engine.store.s3 import S3Store
from checkpoint.protocol import RESERVED_DIR
from checkpoint.savelabel import LABEL_KEY
from tests.servers import SeaweedS3


@pytest.fixture
def store(s3_env: SeaweedS3, s3_bucket: tuple[str, str]) -> Iterator[S3Store]:
    assert os.environ["AWS_ENDPOINT_URL_S3"].startswith("http://127.0.0.1:")
    s3 = S3Store.from_uri(f"s3://{s3_bucket[1]}/ckpt")
    yield s3
    s3.close()


def commit(store: S3Store, rank: int, directory: Path, label: str, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(os.urandom(3000) + label.encode())
    (directory / RESERVED_DIR).mkdir(exist_ok=True)
    (directory / RESERVED_DIR / "progress.json").write_text(json.dumps({LABEL_KEY: label}))
    ckpt = Checkpointer(RankStore(store, "job", rank), directory)
    ckpt.restore()
    assert ckpt.sync_once("test").sequence is not None
    ckpt.close()


def test_a_group_on_s3_restores_the_union_and_doctor_says_which(
    tmp_path: Path, store: S3Store
) -> None:
    commit(store, 0, tmp_path / "r0", "10", "zero")
    settings = GroupSettings(2, 1, "all", "--group-rank")
    first = check_group(settings, store, "job")
    assert first.status == "ok" and first.detail.endswith(
        "no group checkpoint stored yet (a fresh start)"
    )
    commit(store, 1, tmp_path / "r1", "10", "one")
    group = Group(store, "job", 2)
    assert group.complete("10", writer=1) is not None

    check = check_group(settings, store, "job")
    assert (
        check.status == "ok" and "group checkpoint 1 (label 10, this rank's part 1)" in check.detail
    )
    commit(store, 2, tmp_path / "r2", "10", "two")  # a third rank's part: not a group of 2
    wrong = check_group(settings, store, "job")
    assert wrong.status == "FAIL" and "parts of 3 ranks" in wrong.detail

    fresh = tmp_path / "fresh"
    job = RankStore(store, "job", 1)
    inner = Checkpointer(job, fresh)
    GroupCheckpoints(inner, Group(store, "job", 2), job, False, fresh).restore()  # type: ignore[arg-type]
    assert sorted(p.name for p in fresh.iterdir() if p.is_file()) == ["one", "zero"]
    assert (fresh / "zero").read_bytes() == (tmp_path / "r0" / "zero").read_bytes()
    inner.close()
