"""A real multi-node group on one machine: two agents, each with its own checkpoint dir and
rank, each running ``torchrun --nnodes 2 --node_rank R`` (gloo on the CPU) of a job that
saves with ``torch.distributed.checkpoint`` inside save points labelled with the step;
SeaweedFS is the store. Interrupted, killed, resumed: every node restores one save point."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import pytest

from agent import exits
from agent.imds_mock import ImdsMock
from checkpoint.engine.group import Group, label_of, merge_parts
from checkpoint.engine.store.s3 import S3Store
from tests.agentproc import REPO, AgentRun, agent_env, cli, start_agent
from tests.ports import rendezvous_port
from tests.servers import SeaweedS3

pytestmark = pytest.mark.long

JOB = REPO / "tests" / "e2e" / "groupjob.py"
SIZE = 2
STEPS = 40
GRACE = 40.0


def torchrun(rank: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(SIZE),
        "--node_rank",
        str(rank),
        "--nproc_per_node",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        str(JOB),
    ]


def job_env(steps: int, step_seconds: float = 0.25) -> dict[str, str]:
    return {
        "GROUP_JOB_STEPS": str(steps),
        "GROUP_JOB_SAVE_EVERY": "5",
        "GROUP_JOB_STEP_SECONDS": str(step_seconds),
        "OMP_NUM_THREADS": "1",
    }


def start_group(
    tmp: Path,
    uri: str,
    job_id: str,
    tag: str,
    *,
    steps: int = STEPS,
    command: list[str] | None = None,
    per_rank: Mapping[int, Mapping[str, str]] | None = None,
    args: tuple[str, ...] = (),
    grace: float = GRACE,
) -> list[AgentRun]:
    port = rendezvous_port()
    runs = []
    for rank in range(SIZE):
        env = agent_env(
            tmp,
            {
                "SPOT_AGENT_CHECKPOINT_URI": uri,
                "SPOT_AGENT_GROUP_SIZE": str(SIZE),
                "SPOT_AGENT_GROUP_RANK": str(rank),
                **job_env(steps),
                **(per_rank or {}).get(rank, {}),
            },
        )
        run_args = [
            "--job-id",
            job_id,
            "--checkpoint-dir",
            str(tmp / f"{tag}-dir{rank}"),
            "--grace-period",
            f"{grace:g}s",
            *args,
        ]
        cmd = command or torchrun(rank, port)
        runs.append(start_agent(tmp, run_args, cmd, env=env, name=f"{tag}-rank{rank}"))
    return runs


def final_weights(run: AgentRun) -> str:
    lines = [ln for ln in run.job_stdout().splitlines() if ln.startswith("FINAL ")]
    assert lines, run.stdout
    return lines[-1]


def stopped_at(run: AgentRun, rank: int) -> int:
    prefix = f"rank {rank} stopping at step "
    lines = [ln for ln in run.job_stdout().splitlines() if ln.startswith(prefix)]
    assert lines, run.stdout
    return int(lines[-1][len(prefix) :])


def kill_node(run: AgentRun) -> None:
    """kill -9 of a whole node: the agent and the job's process group."""
    child = [e for e in run.events() if e.get("event") == "child.started"]
    run.proc.kill()
    if child:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child[-1]["child_pid"], signal.SIGKILL)
    run.wait(30)


def wait_all(runs: list[AgentRun], timeout: float) -> list[int]:
    return [r.wait(timeout) for r in runs]


def verify_records(group: Group) -> list[str]:
    """Every committed group checkpoint: each rank's part holds the record's label, and the
    union of the parts holds that step's whole DCP checkpoint. Returns the labels."""
    labels = []
    for record in group.records(newest_first=False):
        parts = [group.part(r, s) for r, s in enumerate(record.parts)]
        assert all(label_of(p) == record.label for p in parts), record
        union = merge_parts(parts, record.label, parts[0])
        step = f"step-{int(record.label):06d}"
        names = {f.path for f in union.files if f.path.startswith(step + "/")}
        assert names == {f"{step}/.metadata", f"{step}/__0_0.distcp", f"{step}/__1_0.distcp"}
        labels.append(record.label)
    return labels


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final weights of the job run straight through, without agents."""
    tmp = tmp_path_factory.mktemp("straight")
    port = rendezvous_port()
    env = {**os.environ, **job_env(STEPS, 0.0), "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            torchrun(rank, port),
            env={**env, "CHECKPOINT_DIR": str(tmp / f"dir{rank}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for rank in range(SIZE)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    return next(ln for ln in outs[0].splitlines() if ln.startswith("FINAL "))


@pytest.fixture
def imds() -> Iterator[ImdsMock]:
    with ImdsMock() as mock:
        yield mock


@pytest.fixture
def store(s3_env: SeaweedS3, s3_bucket: tuple[str, str]) -> Iterator[tuple[str, S3Store]]:
    uri = f"s3://{s3_bucket[1]}/jobs"
    assert s3_bucket[0].startswith("http://127.0.0.1:")
    assert os.environ["AWS_ENDPOINT_URL_S3"] == s3_env.endpoint
    s3 = S3Store.from_uri(uri)
    yield uri, s3
    s3.close()


def test_a_notice_to_one_node_stops_every_node_at_one_step_and_the_group_resumes(
    tmp_path: Path, store: tuple[str, S3Store], imds: ImdsMock, uninterrupted: str
) -> None:
    uri, s3 = store
    notified = {
        "SPOT_AGENT_IMDS": "on",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
        "SPOT_AGENT_IMDS_INTERVAL": "0.5s",
        "AWS_EC2_METADATA_DISABLED": "false",  # the S3 fixture turns it off
    }
    runs = start_group(tmp_path, uri, "dcp", "first", per_rank={0: notified})
    runs[1].wait_for(lambda: runs[1].has_line("rank 1 saved step 10"), 240, "step 10 saved")
    imds.post_interruption("terminate", in_seconds=GRACE)
    assert wait_all(runs, GRACE + 60) == [exits.INTERRUPTED] * SIZE
    step = stopped_at(runs[0], 0)
    assert stopped_at(runs[1], 1) == step
    assert runs[0].event("notice.interruption")["source"] == "imds:spot"
    assert runs[1].event("notice.interruption")["source"] == "group:rank0:imds:spot"
    sent = datetime.fromisoformat(runs[0].event("group.notice_sent")["timestamp"])
    seen = datetime.fromisoformat(runs[1].event("notice.interruption")["timestamp"])
    print(f"peer notice after {(seen - sent).total_seconds():.3f}s")  # docs/groups.md
    group = Group(s3, "dcp", SIZE)
    assert verify_records(group)[-1] == str(step)

    again = start_group(tmp_path, uri, "dcp", "second")  # fresh dirs
    assert wait_all(again, 300) == [0, 0]
    for rank, run in enumerate(again):
        assert run.has_line(f"rank {rank} resumed at step {step}")
        assert run.event("group.restored")["label"] == str(step)
    assert final_weights(again[0]) == uninterrupted
    assert verify_records(group)[-1] == str(STEPS)
    env = agent_env(tmp_path, {"SPOT_AGENT_CHECKPOINT_URI": uri})
    listed = cli(tmp_path, "checkpoints", "list", "--job-id", "dcp", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "a group of 2 ranks" in listed.stdout
    assert listed.stdout.splitlines()[-1].split()[2] == str(STEPS)  # GROUP CREATED LABEL
    # The group's last checkpoint, every rank's part of it, into one dir (a group's
    # checkpoint is made of parts: it restores whole, never a page at a time).
    whole = tmp_path / "group-restored"
    got = cli(tmp_path, "checkpoints", "restore", "--job-id", "dcp", "--to", str(whole), env=env)
    assert got.returncode == 0, got.stdout + got.stderr
    last = whole / f"step-{STEPS:06d}"
    assert (last / ".metadata").is_file() and len(list(last.glob("*.distcp"))) == SIZE
    # Each rank's timeline: its own two attempts, the notice as that rank saw it.
    for rank, source in enumerate(("imds:spot", "group:rank0:imds:spot")):
        asked = ("timeline", "--job-id", "dcp", "--rank", str(rank), "--json")
        tl = cli(tmp_path, "checkpoints", *asked, env=env)
        assert tl.returncode == 0, tl.stderr
        attempts = json.loads(tl.stdout)["attempts"]
        assert [a["end"] for a in attempts] == ["interrupted", "exited"]
        assert attempts[0]["notice"]["source"] == source
    unranked = cli(tmp_path, "checkpoints", "timeline", "--job-id", "dcp", env=env)
    assert unranked.returncode == 2
    (line,) = unranked.stderr.strip().splitlines()  # one line naming the setting
    assert "--rank" in line and "job dcp is a group of 2 ranks" in line
    assert line.endswith("give --rank 0 to 1")


def test_kill_9_of_a_node_mid_save_restores_the_last_complete_step_everywhere(
    tmp_path: Path, store: tuple[str, S3Store]
) -> None:
    uri, s3 = store
    rng = random.Random(27)
    show = [
        sys.executable,
        "-c",
        "import checkpoint, os; print('HAS', sorted(os.listdir(checkpoint.directory())))",
    ]
    for round_ in range(2):
        job_id = f"kill{round_}"
        runs = start_group(
            tmp_path, uri, job_id, f"k{round_}", args=("--sync-interval", "0.3s"), grace=8.0
        )
        group = Group(s3, job_id, SIZE)
        runs[1].wait_for(lambda g=group: next(g.records(), None) is not None, 240, "a record")
        time.sleep(rng.uniform(0.0, 2.5))  # inside or around the next saves
        kill_node(runs[1])
        # Its peer gone, rank 0's job hangs in a collective (as torch's do): the platform
        # stops the rest of the group, and the agent commits what rank 0 saved last.
        runs[0].signal(signal.SIGTERM)
        assert runs[0].wait(60) in (exits.INTERRUPTED, exits.GROUP_INCOMPLETE)
        labels = verify_records(group)
        newest = next(group.records())
        # Every rank restores the newest record's step, even when a rank has newer parts.
        restored = start_group(tmp_path, uri, job_id, f"r{round_}", command=show)
        assert wait_all(restored, 120) == [0, 0]
        for run in restored:
            has = next(ln for ln in run.job_stdout().splitlines() if ln.startswith("HAS "))
            ev = run.event("group.restored")
            assert ev["label"] == newest.label == labels[-1]
            assert f"step-{int(newest.label):06d}" in has


def test_a_node_that_never_comes_back_leaves_the_others_exiting_78_by_their_deadline(
    tmp_path: Path, store: tuple[str, S3Store]
) -> None:
    uri, s3 = store
    runs = start_group(tmp_path, uri, "lost", "lost", per_rank={1: {"GROUP_JOB_LINGER": "120"}})
    runs[1].wait_for(lambda: runs[1].has_line("rank 1 saved step 5"), 240, "a save")
    runs[0].signal(signal.SIGTERM)
    sent = time.monotonic()
    runs[1].wait_for(
        lambda: "rank 1 stopping at step" in runs[1].job_stdout(), 60, "rank 1's last save"
    )
    kill_node(runs[1])  # saved, but its agent never commits it
    assert runs[0].wait(GRACE + 30) == exits.GROUP_INCOMPLETE
    assert time.monotonic() - sent < GRACE + 30
    step = stopped_at(runs[0], 0)
    group = Group(s3, "lost", SIZE)
    assert group.find_part(0, str(step)) is not None  # its own part is committed
    assert group.find_part(1, str(step)) is None
    assert str(step) not in verify_records(group)
    assert runs[0].event("agent.exit")["exit_code"] == exits.GROUP_INCOMPLETE
