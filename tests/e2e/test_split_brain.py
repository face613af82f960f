"""Split brain: a stale attempt still runs while a newer attempt of the same job starts.

Both are real ``spot-agent run`` processes with the same job id and store, each with its
own working dir (two machines). The newer one claims the next attempt number, restores the
stale one's last commit and runs to the end. The stale one learns it was superseded at its
next sync (a periodic one, or its final sync after an interruption), says so
(``sync.superseded``), stops its job and exits 76 without committing. Every manifest in the
store is the one its writer committed (none overwritten), and the final restored state is
the newer attempt's.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.uri import open_store
from tests.agentproc import AgentRun, cli, start_agent
from tests.stores import store_agent_env

PY = sys.executable
JOB_ID = "split"

#: argv: steps, and the step at which to ask for a sync (-1: never)
JOB = textwrap.dedent(
    """
    import checkpoint, os, sys, time
    attempt = int(os.environ["SPOT_AGENT_ATTEMPT"])
    steps, request_at = int(sys.argv[1]), int(sys.argv[2])
    state = checkpoint.load_json("state.json", default={"step": 0, "writers": []})
    print("start", attempt, state["step"], flush=True)
    for i in range(steps):
        state["step"] += 1
        state["writers"].append(attempt)
        checkpoint.save_json("state.json", state)
        checkpoint.save_json(f"attempt-{attempt}.json", {"step": state["step"]})
        if i == request_at:
            checkpoint.request_sync(wait=20)
            print("synced", flush=True)
        if checkpoint.interrupted():
            break
        time.sleep(0.05)
    print("done", attempt, state["step"], flush=True)
    """
)


def job(steps: int, request_at: int = -1) -> list[str]:
    return [PY, "-c", JOB, str(steps), str(request_at)]


def committed(run: AgentRun) -> list[int]:
    return [e["sequence"] for e in run.events() if e["event"] == "sync.committed"]


def split_brain(tmp: Path, env_for: Any, stale_next_sync: str) -> None:
    """``env_for(name)``: the environment of one machine (its own state dir)."""
    common = ["--job-id", JOB_ID, "--checkpoint-keep", "0", "--grace-period", "20s"]
    if stale_next_sync == "periodic":
        stale_args, stale_job = ["--sync-interval", "0.2s"], job(100_000)
    else:  # one requested sync, then none until the interruption's final sync
        stale_args, stale_job = ["--sync-interval", "0"], job(100_000, request_at=2)
    stale = start_agent(tmp, [*common, *stale_args], stale_job, env=env_for("old"), name="old")
    stale.wait_for(lambda: bool(committed(stale)), what="the stale attempt's first commit")
    assert stale.event("agent.start")["attempt"] == 1

    newer = start_agent(
        tmp, [*common, "--sync-interval", "0.2s"], job(20), env=env_for("new"), name="new"
    )
    assert newer.wait(60) == 0, newer.stdout + newer.stderr
    assert newer.event("agent.start")["attempt"] == 2
    restored = newer.event("restore.done")["sequence"]

    if stale_next_sync == "interruption":
        assert stale.proc.poll() is None, "the stale attempt had no sync to learn it lost"
        stale.signal(signal.SIGTERM)
    assert stale.wait(60) == 76, stale.stdout + stale.stderr
    events = [e["event"] for e in stale.events()]
    told = events.index("sync.superseded")
    assert "sync.committed" not in events[told:], "the stale attempt committed after being told"
    assert stale.event("agent.exit")["exit_code"] == 76
    assert "attempt 1 is stale" in stale.event("sync.superseded")["error"]

    # Neither overwrote the other: each manifest is its writer's, numbers never reused.
    old_seqs, new_seqs = committed(stale), committed(newer)
    assert old_seqs and new_seqs and restored in old_seqs
    assert max(old_seqs) < min(new_seqs), (old_seqs, new_seqs)
    store = open_store(env_for("new")["SPOT_AGENT_CHECKPOINT_URI"])
    jobstore = JobStore(store, JOB_ID)
    by_attempt: dict[int, list[int]] = {1: [], 2: []}
    for seq in jobstore.sequences():
        by_attempt[jobstore.load_manifest(seq).attempt].append(seq)
    assert by_attempt == {1: old_seqs, 2: new_seqs}
    store.close()

    # The final state is the newer attempt's: its whole run on top of what it restored.
    dst = tmp / "restored"
    out = cli(tmp, "checkpoints", "restore", "--job-id", JOB_ID, "--to", str(dst), env=env_for("x"))
    assert out.returncode == 0, out.stderr
    state = json.loads((dst / "state.json").read_text())
    new_dir = tmp / "new" / "spot-agent" / "jobs" / JOB_ID / "checkpoint"
    assert state == json.loads((new_dir / "state.json").read_text())
    found = re.search(r"^start 2 (\d+)$", newer.stdout, re.MULTILINE)
    assert found, newer.stdout
    start = int(found.group(1))
    assert state["writers"] == [1] * start + [2] * 20
    assert sorted(p.name for p in dst.iterdir()) == [
        "attempt-1.json",
        "attempt-2.json",
        "state.json",
    ]


@pytest.mark.parametrize(
    ("store_url", "stale_next_sync"),
    [("local", "periodic"), ("local", "interruption"), ("s3", "periodic")],
    indirect=["store_url"],
)
def test_split_brain(tmp_path: Path, store_url: str, stale_next_sync: str) -> None:
    def env_for(name: str) -> dict[str, str]:
        return store_agent_env(tmp_path, store_url, {"XDG_STATE_HOME": str(tmp_path / name)})

    split_brain(tmp_path, env_for, stale_next_sync)
