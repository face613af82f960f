"""The key layout of a job in a store (checkpoint.engine.format.layout): every name as the
docs give it, a group's ranks and records included, and names that are not ours refused."""

from __future__ import annotations

import pytest

from checkpoint.engine.format.layout import KINDS, Layout, number_of
from checkpoint.engine.format.manifest import Chunk

H = "ab" + "c" * 62


def test_the_keys_of_a_job() -> None:
    job = Layout("j")
    assert job.blob_key(H) == f"j/blobs/ab/{H}"
    assert job.pack_key(H) == f"j/packs/ab/{H}"
    assert job.chunk_key(Chunk(H, 1)) == job.blob_key(H)
    assert job.chunk_key(Chunk("d" * 64, 1, pack=H, offset=5)) == job.pack_key(H)
    assert job.manifest_key(12) == "j/manifests/0000000012.json"
    assert job.page_key(H) == f"j/pages/ab/{H}"
    assert job.attempt_key(3) == "j/attempts/000003.json"
    assert job.record_key(3) == "j/timeline/000003.json"
    assert job.lease_key(3) == "j/leases/000003.json"
    assert job.sweep_key("20261207T000000-x") == "j/sweeps/20261207T000000-x.json"


def test_a_rank_numbers_its_own_folders_and_shares_the_rest() -> None:
    rank = Layout("j", rank=2)
    assert rank.manifest_key(12) == "j/ranks/2/manifests/0000000012.json"
    assert rank.attempt_key(3) == "j/ranks/2/attempts/000003.json"
    assert rank.record_key(3) == "j/ranks/2/timeline/000003.json"
    assert rank.blob_key(H) == Layout("j").blob_key(H)
    assert rank.page_key(H) == Layout("j").page_key(H)
    assert rank.lease_key(3) == "j/leases/2-000003.json"  # one folder: gc sees every rank
    assert rank.sweep_folder == "j/sweeps/"


def test_the_keys_of_a_group() -> None:
    job = Layout("j")
    assert job.group_record_key(4) == "j/group/checkpoints/0000000004.json"
    assert job.notice_key(1, 7) == "j/group/notices/1-7.json"
    assert job.notice_key(1, 7).startswith(job.notices_of(1))
    assert not job.notice_key(11, 7).startswith(job.notices_of(1))


def test_a_part_key_is_read_back_and_nothing_else_is() -> None:
    job = Layout("j")
    assert job.part_of(Layout("j", rank=3).manifest_key(12)) == (3, 12)
    assert job.part_of("j/ranks/3/attempts/000001.json") is None
    assert job.part_of("j/manifests/0000000012.json") is None
    assert job.part_of("other/ranks/3/manifests/0000000012.json") is None


@pytest.mark.parametrize(
    ("name", "number"), [("0000000012.json", 12), ("².json", None), ("1.txt", None)]
)
def test_only_ascii_numbered_names_are_ours(name: str, number: int | None) -> None:
    assert number_of(name) == number


def test_a_job_is_deleted_manifests_before_the_objects_they_name() -> None:
    assert KINDS.index("group") < KINDS.index("ranks") < KINDS.index("blobs")
    assert KINDS.index("manifests") < min(KINDS.index(k) for k in ("pages", "blobs", "packs"))
