"""Groups: settings, the union of parts, the group record and the restore plan (a local
store, real checkpoint dirs and Checkpointers; the multi-node runs are tests/e2e/test_group.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

import checkpoint
from agent.cli import build_parser
from agent.config import ConfigError, Settings, load_settings
from agent.group.checkpoints import GroupCheckpoints
from agent.group.notices import PeerNotices, notice_body, parse_peer_notice
from agent.notices import sigterm_notice
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.paged import PAGED_ABOVE
from checkpoint.engine.gc import collect_garbage
from checkpoint.engine.group import (
    Group,
    GroupRecord,
    PathConflict,
    RankStore,
    label_of,
    merge_parts,
)
from checkpoint.engine.store.base import LocalStore
from checkpoint.engine.store.uri import open_store
from checkpoint.protocol import RESERVED_DIR
from checkpoint.savelabel import LABEL_KEY, read_save_label

# -- settings ---------------------------------------------------------------------------


def settings(tmp_path: Path, *args: str, **env: str) -> Settings:
    parsed = build_parser().parse_args(["run", *args])
    return load_settings(parsed, ["job"], {"XDG_STATE_HOME": str(tmp_path), **env})


def test_without_group_settings_there_is_no_group(tmp_path: Path) -> None:
    assert settings(tmp_path).group is None
    assert settings(tmp_path, "--group-size", "1").group is None
    assert settings(tmp_path, JOB_COMPLETION_INDEX="3").group is None  # a plain indexed Job


def test_rank_defaults_from_the_platforms(tmp_path: Path) -> None:
    g = settings(tmp_path, "--group-size", "4", JOB_COMPLETION_INDEX="2").group
    assert g is not None and (g.size, g.rank, g.rank_source) == (4, 2, "JOB_COMPLETION_INDEX")
    g = settings(tmp_path, AWS_BATCH_JOB_NUM_NODES="3", AWS_BATCH_JOB_NODE_INDEX="1").group
    assert g is not None and (g.size, g.rank, g.restore) == (3, 1, "all")
    g = settings(
        tmp_path, SPOT_AGENT_GROUP_SIZE="2", SPOT_AGENT_GROUP_RANK="0", JOB_COMPLETION_INDEX="1"
    ).group
    assert g is not None and g.rank == 0  # the setting wins over the platform's
    g = settings(tmp_path, "--group-size", "2", "--group-rank", "1", "--group-restore", "own").group
    assert g is not None and g.restore == "own"


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--group-size", "2", "--group-rank", "2"], {}, "rank 2 is not below the group size 2"),
        (["--group-size", "3"], {}, "needs each node's rank"),
        (["--group-size", "two"], {}, "SPOT_AGENT_GROUP_SIZE"),
        (["--group-size", "0"], {}, "2 to 4096 nodes"),
        ([], {"AWS_BATCH_JOB_NUM_NODES": "2", "AWS_BATCH_JOB_NODE_INDEX": "x"}, "NODE_INDEX"),
        (["--group-size", "2", "--group-rank", "0", "--group-restore", "some"], {}, "all, own"),
    ],
)
def test_bad_group_settings_get_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, *args, **env)
    assert words in str(err.value) and "\n" not in str(err.value)


# -- labels -----------------------------------------------------------------------------


def test_a_labelled_save_leaves_its_label_beside_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.delenv("SPOT_AGENT_LOCK_FILE", raising=False)
    with checkpoint.saving(label=120):
        checkpoint.save_json("a.json", 1)
    assert read_save_label(tmp_path / RESERVED_DIR) == "120"
    with pytest.raises(ValueError, match="one line"), checkpoint.saving(label="a\nb"):
        pass
    with pytest.raises(RuntimeError), checkpoint.saving(label=130):
        raise RuntimeError("a save that fails leaves the last whole save's label")
    assert read_save_label(tmp_path / RESERVED_DIR) == "120"


def test_the_freeze_keeps_a_label_written_by_any_language(tmp_path: Path) -> None:
    from checkpoint.engine.save.freeze import Freezer

    (tmp_path / "n").write_text("7\n")
    freezer = Freezer(tmp_path)
    freezer.reset()
    (tmp_path / RESERVED_DIR / "progress.json").write_text('{"loss": 0.5}')
    (tmp_path / RESERVED_DIR / "save-label").write_text("7\n")  # as a shell job writes it
    frozen = freezer.freeze(1.0)
    assert frozen.progress == {"loss": 0.5, LABEL_KEY: "7"}
    (tmp_path / RESERVED_DIR / "save-label").write_text("x" * 201)  # not a label: left out
    assert LABEL_KEY not in freezer.freeze(1.0).progress
    freezer.close()


# -- parts, records and the restore plan ---------------------------------------------------


def commit_part(
    store: LocalStore,
    rank: int,
    directory: Path,
    label: str,
    files: dict[str, bytes],
    *,
    paged_above: int = PAGED_ABOVE,
) -> int:
    """Write ``files`` into ``directory`` (exactly) and commit it as rank's part of ``label``."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        if old.is_file():
            old.unlink()
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / RESERVED_DIR).mkdir(exist_ok=True)
    (directory / RESERVED_DIR / "progress.json").write_text(json.dumps({LABEL_KEY: label}))
    ckpt = Checkpointer(
        RankStore(store, "job", rank), directory, pack_threshold=0, paged_above=paged_above
    )
    ckpt.restore()  # the newest part, as the agent's base
    result = ckpt.sync_once("test")
    ckpt.close()
    assert result.sequence is not None
    return result.sequence


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    s = open_store((tmp_path / "store").as_uri())
    assert isinstance(s, LocalStore)
    return s


def test_the_record_is_written_once_every_rank_has_the_label(
    tmp_path: Path, store: LocalStore
) -> None:
    group = Group(store, "job", 2)
    commit_part(store, 0, tmp_path / "r0", "10", {".metadata": b"m10", "__0_0": b"a10"})
    assert group.complete("10", writer=0) is None  # rank 1 has no part of 10 yet
    assert group.sequences() == []
    commit_part(store, 1, tmp_path / "r1", "10", {"__1_0": b"b10"})
    record = group.complete("10", writer=1)
    assert record is not None and (record.sequence, record.label, record.parts) == (1, "10", (1, 1))
    assert Group(store, "job", 2).complete("10", writer=0) == record  # found, not written again
    assert group.sequences() == [1]
    # Rank 0 goes ahead to 15 and commits; rank 1 never does: no record of 15.
    commit_part(store, 0, tmp_path / "r0", "15", {".metadata": b"m15", "__0_0": b"a15"})
    assert group.complete("15", writer=0) is None
    assert [r.label for r in group.records()] == ["10"]


def test_a_late_look_never_records_an_older_save_point(tmp_path: Path, store: LocalStore) -> None:
    group = Group(store, "job", 2)
    for label in ("10", "15"):
        commit_part(store, 0, tmp_path / "r0", label, {"a": label.encode()})
        commit_part(store, 1, tmp_path / "r1", label, {"b": label.encode()})
    assert group.complete("15", writer=1) is not None
    assert group.complete("10", writer=0) is None  # rank 0's look for 10 came late
    assert [r.label for r in group.records()] == ["15"]


def test_restore_gets_the_union_of_the_newest_record_never_a_lone_part(
    tmp_path: Path, store: LocalStore
) -> None:
    group = Group(store, "job", 2)
    commit_part(store, 0, tmp_path / "r0", "10", {".metadata": b"m10", "__0_0": b"a10"})
    commit_part(store, 1, tmp_path / "r1", "10", {"__1_0": b"b10"})
    assert group.complete("10", writer=1) is not None
    commit_part(store, 0, tmp_path / "r0", "15", {".metadata": b"m15", "__0_0": b"a15"})

    for rank, own_only, expected in [
        (0, False, {".metadata": b"m10", "__0_0": b"a10", "__1_0": b"b10"}),
        (1, False, {".metadata": b"m10", "__0_0": b"a10", "__1_0": b"b10"}),
        (0, True, {".metadata": b"m10", "__0_0": b"a10"}),
        (1, True, {"__1_0": b"b10"}),
    ]:
        fresh = tmp_path / f"fresh{rank}{own_only}"
        job = RankStore(store, "job", rank)
        inner = Checkpointer(job, fresh)
        ckpt = GroupCheckpoints(inner, group, job, own_only, fresh)  # type: ignore[arg-type]
        result = ckpt.restore()
        got = {p.name: p.read_bytes() for p in fresh.iterdir() if p.is_file()}
        assert got == expected, (rank, own_only)
        assert result.manifest is not None and label_of(result.manifest) == "10"
        # the base is the rank's own part of 10: its next commit follows its newest part
        assert result.manifest.sequence == 1
        assert job.sequences() == ([1, 2] if rank == 0 else [1])  # the view is gone
        inner.close()


def test_conflicting_paths_are_refused_with_their_names(tmp_path: Path, store: LocalStore) -> None:
    commit_part(store, 0, tmp_path / "r0", "5", {"shared.txt": b"zero", "same": b"x"})
    commit_part(store, 1, tmp_path / "r1", "5", {"shared.txt": b"one", "same": b"x"})
    group = Group(store, "job", 2)
    with pytest.raises(PathConflict, match=r"shared\.txt") as err:
        group.complete("5", writer=0)
    assert err.value.paths == ["shared.txt"]  # identical copies are not a conflict
    assert group.sequences() == []


def test_merge_refuses_a_file_against_a_directory(tmp_path: Path, store: LocalStore) -> None:
    commit_part(store, 0, tmp_path / "r0", "5", {"x": b"file"})
    d = tmp_path / "r1"
    (d / "x").mkdir(parents=True)
    (d / "x" / "y").write_bytes(b"inside")
    (d / RESERVED_DIR).mkdir()
    (d / RESERVED_DIR / "progress.json").write_text(json.dumps({LABEL_KEY: "5"}))
    Checkpointer(RankStore(store, "job", 1), d).sync_once("test")
    group = Group(store, "job", 2)
    parts = [group.part(0, 1), group.part(1, 1)]
    with pytest.raises(PathConflict, match="x"):
        merge_parts(parts, "5", parts[0])


def test_gc_of_a_group_keeps_every_ranks_chunks(tmp_path: Path, store: LocalStore) -> None:
    commit_part(store, 0, tmp_path / "r0", "1", {"a": b"rank zero" * 1000})
    commit_part(store, 1, tmp_path / "r1", "1", {"b": b"rank one" * 1000})
    from checkpoint.engine.format.jobstore import JobStore

    result = collect_garbage(JobStore(store, "job"), min_age=timedelta(0))
    assert result.deleted == 0 and result.referenced == result.blobs == 2
    assert result.manifests == 2


def test_a_bad_record_is_one_clear_error() -> None:
    from checkpoint.errors import ManifestError

    with pytest.raises(ManifestError, match=r"parts must name ranks 0\.\.1"):
        GroupRecord.from_json(b'{"sequence":1,"label":"x","size":2,"parts":{"0":1}}', "k")
    with pytest.raises(ManifestError, match="not a group record"):
        GroupRecord.from_json(b"[]", "k")


# -- notices ------------------------------------------------------------------------------


def test_a_peers_notice_keeps_its_deadline_and_names_its_rank(store: LocalStore) -> None:
    notice = sigterm_notice(30.0)
    peer = parse_peer_notice(notice_body(notice, rank=1, attempt=4))
    assert peer is not None and peer.is_interruption
    assert peer.source == "group:rank1:sigterm" and peer.deadline == notice.deadline
    assert parse_peer_notice(b"{}") is None

    group = Group(store, "job", 2)
    store.put_object(f"{group.notices_prefix()}1-4.json", notice_body(notice, 1, 4))
    store.put_object(f"{group.notices_prefix()}0-4.json", notice_body(notice, 0, 4))  # its own
    seen: list[object] = []
    watcher = PeerNotices(group, rank=0, since=None, interval=2.0)
    watcher.look(seen.append)
    watcher.look(seen.append)  # each notice once
    assert [n.source for n in seen] == ["group:rank1:sigterm"]  # type: ignore[attr-defined]
    old = PeerNotices(group, rank=0, since=notice.received + timedelta(days=1), interval=2.0)
    old.look(seen.append)  # stored before this attempt began: an earlier run's
    assert len(seen) == 1


# -- checkpoints list, doctor ---------------------------------------------------------------


def test_list_shows_the_group_checkpoints_and_each_ranks_newest_part(
    tmp_path: Path, store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.group.listing import check_group, list_group

    assert list_group(store, "job", as_json=False) is None  # not a group job
    commit_part(store, 0, tmp_path / "r0", "10", {"a": b"0"})
    commit_part(store, 1, tmp_path / "r1", "10", {"b": b"1"})
    assert Group(store, "job", 2).complete("10", writer=1) is not None
    commit_part(store, 0, tmp_path / "r0", "15", {"a": b"00"})
    assert list_group(store, "job", as_json=False) == 0
    out = capsys.readouterr().out
    assert "a group of 2 ranks; newest part of each rank: [2, 1]" in out
    assert out.splitlines()[-1].split()[0] == "1" and "10" in out.splitlines()[-1]
    assert list_group(store, "job", as_json=True) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["records"][0]["label"] == "10" and doc["records"][0]["parts"] == [1, 1]

    from agent.config import GroupSettings

    check = check_group(GroupSettings(2, 0, "all", "--group-rank"), store, "job")
    assert check.status == "warn" and "local store" in check.detail


def test_show_and_restore_of_a_group_job_give_the_union_of_a_record(
    tmp_path: Path, store: LocalStore
) -> None:
    from tests.agentproc import agent_env, cli

    commit_part(store, 0, tmp_path / "r0", "10", {".metadata": b"m", "__0_0": b"a"})
    commit_part(store, 1, tmp_path / "r1", "10", {"__1_0": b"b"})
    assert Group(store, "job", 2).complete("10", writer=0) is not None
    commit_part(store, 1, tmp_path / "r1", "15", {"__1_0": b"bb"})  # a lone part: not shown
    env = agent_env(tmp_path, {"SPOT_AGENT_CHECKPOINT_URI": store.uri})
    shown = cli(tmp_path, "checkpoints", "show", "--job-id", "job", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert sorted(f["path"] for f in doc["files"]) == [".metadata", "__0_0", "__1_0"]
    out = tmp_path / "out"
    done = cli(tmp_path, "checkpoints", "restore", "--job-id", "job", "--to", str(out), env=env)
    assert done.returncode == 0, done.stderr
    got = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert got == {".metadata": b"m", "__0_0": b"a", "__1_0": b"b"}


def test_pruning_a_rank_keeps_the_parts_records_name(tmp_path: Path, store: LocalStore) -> None:
    from checkpoint.engine.gc import prune_manifests

    commit_part(store, 0, tmp_path / "r0", "10", {"a": b"10"})
    commit_part(store, 1, tmp_path / "r1", "10", {"b": b"10"})
    group = Group(store, "job", 2)
    assert group.complete("10", writer=0) is not None
    for step in ("15", "20", "25"):  # rank 1 never gets there: no newer record
        commit_part(store, 0, tmp_path / "r0", step, {"a": step.encode()})
    job = RankStore(store, "job", 0)
    job.pinned = frozenset(group.referenced(0))
    assert prune_manifests(job, keep=1) == [2, 3]  # not 1: record 1 names it
    assert job.sequences() == [1, 4]


def test_jobs_counts_a_groups_checkpoints_and_delete_drops_records_first(
    tmp_path: Path, store: LocalStore
) -> None:
    from agent.stores import job_objects, list_jobs
    from checkpoint.engine.format.jobstore import JobStore

    commit_part(store, 0, tmp_path / "r0", "10", {"a": b"0"})
    commit_part(store, 1, tmp_path / "r1", "10", {"b": b"1"})
    assert Group(store, "job", 2).complete("10", writer=0) is not None
    [summary] = list_jobs(store)
    assert (summary.job_id, summary.checkpoints, summary.newest) == ("job", 1, 1)
    objects, _ = job_objects(JobStore(store, "job"))
    kinds = [o.key.split("/")[1] for o in objects]
    assert kinds.index("group") < kinds.index("ranks") < kinds.index("blobs")


# -- a group in main's store layout: pages, leases, timeline -------------------------------


def test_a_rank_has_its_own_numbered_folders_and_shares_the_rest(store: LocalStore) -> None:
    from checkpoint.engine.format.jobstore import JobStore

    rank, job = RankStore(store, "job", 1), JobStore(store, "job")
    assert rank.manifest_key(3) == "job/ranks/1/manifests/0000000003.json"
    assert rank.attempt_key(2) == "job/ranks/1/attempts/000002.json"
    assert rank.record_key(2) == "job/ranks/1/timeline/000002.json"  # attempts are per rank
    shared = ("blob_key", "pack_key", "page_key")
    assert [getattr(rank, k)("ab" * 32) for k in shared] == [
        getattr(job, k)("ab" * 32) for k in shared
    ]
    assert (rank.lease_folder, rank.sweep_folder) == (job.lease_folder, job.sweep_folder)
    assert rank.lease_key(2) == "job/leases/1-000002.json"  # never rank 0's attempt 2's
    store.put_object(rank.record_key(1), b"{}")
    assert (rank.recorded_attempts(), RankStore(store, "job", 0).recorded_attempts()) == ([1], [])
    assert job.recorded_attempts() == []


def test_a_live_rank_makes_gc_and_delete_of_the_group_job_refuse(store: LocalStore) -> None:
    from agent.config import ConfigError
    from agent.live_job import unless_live
    from checkpoint.engine.format.jobstore import JobStore
    from checkpoint.engine.lease import LeasePolicy, drop_lease, live_leases, write_lease

    ranks = [RankStore(store, "job", r) for r in range(2)]
    for rank, host in zip(ranks, ("node-a", "node-b"), strict=True):
        write_lease(rank, 4, host, LeasePolicy())  # both ranks' attempt 4: two leases
    job = JobStore(store, "job")  # what `checkpoints gc` and `delete` look at
    assert sorted(lease.host for lease in live_leases(job)) == ["node-a", "node-b"]
    drop_lease(ranks[0], 4)  # rank 0 exited; rank 1 still runs
    for command in ("gc", "delete"):
        with (
            pytest.raises(ConfigError, match="attempt 4 on node-b"),
            unless_live(job, command, force=False),
        ):
            raise AssertionError(f"{command} ran while rank 1 is live")
    drop_lease(ranks[1], 4)
    with unless_live(job, "gc", force=False) as sweep:
        assert sweep is None  # no rank is live: gc goes on, no sweep announced


def test_gc_of_a_group_keeps_every_ranks_pages(tmp_path: Path, store: LocalStore) -> None:
    from checkpoint.engine.format.jobstore import JobStore

    many = {f"f{i:02d}": f"{i}".encode() for i in range(12)}
    commit_part(
        store, 0, tmp_path / "r0", "1", {f"a{k}": v for k, v in many.items()}, paged_above=4
    )
    commit_part(
        store, 1, tmp_path / "r1", "1", {f"b{k}": v for k, v in many.items()}, paged_above=4
    )
    group = Group(store, "job", 2)
    assert group.complete("1", writer=1) is not None
    assert group.part(0, 1).pages and group.part(1, 1).pages  # both parts are paged
    result = collect_garbage(JobStore(store, "job"), min_age=timedelta(0))
    assert result.pages > 0 and result.pages_referenced == result.pages
    assert result.pages_deleted == result.deleted == 0
    fresh = Group(store, "job", 2)  # nothing cached: every page is read from the store
    union = merge_parts([fresh.part(0, 1), fresh.part(1, 1)], "1", fresh.part(0, 1))
    assert len(union.files) == 24 and union.pages == ()


def test_the_timeline_of_a_group_job_is_one_ranks(tmp_path: Path, store: LocalStore) -> None:
    from agent.config import ConfigError
    from agent.group.listing import timeline_job
    from checkpoint.engine.format.jobstore import JobStore

    job = JobStore(store, "job")
    assert timeline_job(job, None) is job  # not a group job: as for one node
    with pytest.raises(ConfigError, match="not a group job: leave --rank out"):
        timeline_job(job, 0)
    commit_part(store, 0, tmp_path / "r0", "1", {"a": b"0"})
    commit_part(store, 1, tmp_path / "r1", "1", {"b": b"1"})
    with pytest.raises(ConfigError, match=r"a group of 2 ranks.*give --rank 0 to 1$"):
        timeline_job(job, None)
    with pytest.raises(ConfigError, match="give --rank 0 to 1, not 2"):
        timeline_job(job, 2)
    rank = timeline_job(job, 1)
    assert isinstance(rank, RankStore) and rank.record_key(1) == "job/ranks/1/timeline/000001.json"
