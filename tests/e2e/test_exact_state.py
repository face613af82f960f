"""The dir is exactly a checkpoint: the agent never commits, and never hands the job, a
state the job did not declare whole (issue 22, items 1 and 2).

The job (tests/e2e/exactjob.py) records the exact tree of every whole save outside its
checkpoint dir and refuses to start from a dir that is not one of them. Agent and job are
killed together (SIGKILL) in the middle of a save; the next start must give the job a
recorded save (or an empty dir and ``SPOT_AGENT_CUT_OFF_SAVE=1``), and every committed
checkpoint, restored, must be a recorded save.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import LocalStore, Store
from tests.agentproc import AgentRun, agent_env, run_agent, start_agent
from tests.e2e.exactjob import recorded, tree
from tests.stores import store_agent_env

JOB = [sys.executable, str(Path(__file__).with_name("exactjob.py"))]


def job_command(record: Path, saves: int, hang_in: int = 0, declare: str = "saving") -> list[str]:
    return [*JOB, str(record), str(saves), str(hang_in or ""), declare]


def run_args(tmp: Path, *extra: str) -> list[str]:
    return ["--job-id", "exact", "--checkpoint-dir", str(tmp / "dir"), *extra]


def kill_together(run: AgentRun) -> None:
    """SIGKILL the agent and its job at the same moment, as a lost machine would."""
    pid = int(run.job_stdout().split(" pid ", 1)[1].split()[0])
    os.kill(run.proc.pid, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    run.wait(30)


def verify_store(store: Store, record: Path, tmp: Path) -> int:
    """Every committed checkpoint, restored, is exactly one save the job recorded whole (or
    the empty dir it started from)."""
    job = JobStore(store, "exact")
    saves = {json_tree(t) for t in recorded(record).values()} | {()}
    sequences = job.sequences()
    for seq in sequences:
        into = tmp / f"verify-{seq}"
        ckpt = Checkpointer(job, into)
        try:
            assert ckpt.restore(seq, into=into).manifest is not None
        finally:
            ckpt.close()
        assert json_tree(tree(into)) in saves, f"checkpoint {seq} is no whole save: {tree(into)}"
    return len(sequences)


def json_tree(t: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(t.items()))


def hang_and_kill(tmp: Path, env: dict[str, str], record: Path) -> AgentRun:
    """Run until the job has had a save committed and hangs half-way through save 25."""
    run = start_agent(
        tmp, run_args(tmp, "--sync-interval", "0.2"), job_command(record, 100, 25), env
    )
    run.wait_for(lambda: "hanging 25" in run.stdout, 60, "the job to hang in save 25")
    run.wait_for(lambda: '"sync.committed"' in run.stdout, 60, "a commit")
    kill_together(run)
    return run


def test_warm_restart_after_kill_mid_save_gives_exactly_the_checkpoint(
    tmp_path: Path, store_url: str, any_store: Store
) -> None:
    env = store_agent_env(tmp_path, store_url)
    record = tmp_path / "record.jsonl"
    hang_and_kill(tmp_path, env, record)
    half = tmp_path / "dir" / "ckpt-25"
    assert half.is_dir()  # the cut-off save is in the dir, with its two files

    again = run_agent(tmp_path, run_args(tmp_path), job_command(record, 0), env)
    assert again.proc.returncode == 0, again.stdout + again.stderr
    assert "SAW-UNCOMMITTED" not in again.stdout and "start " in again.stdout
    cut = again.event("restore.cut_off_save")
    assert cut["action"].startswith("replaced by checkpoint")
    moved = again.event("restore.extra_files")
    assert moved["action"].startswith("moved out of the job's sight")
    assert not half.exists()
    assert (tmp_path / "dir" / ".spot-agent" / "aside" / "ckpt-25").is_dir()  # kept, bounded
    assert verify_store(any_store, record, tmp_path) >= 1


def test_cut_off_save_with_no_checkpoint_is_never_committed_and_the_job_is_told(
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.jsonl"
    store = LocalStore(tmp_path / "store")
    first = start_agent(
        tmp_path, run_args(tmp_path, "--sync-interval", "0"), job_command(record, 5, 1)
    )
    first.wait_for(lambda: "hanging 1" in first.stdout, 60, "the job to hang in save 1")
    kill_together(first)
    assert (tmp_path / "dir" / "ckpt-1" / "a.bin").exists()

    # The job is told; it exits 0 without a whole save: nothing may be committed.
    told = run_agent(tmp_path, run_args(tmp_path), job_command(record, 0))
    assert told.has_line("cut-off told"), told.stdout + told.stderr
    assert told.event("restore.cut_off_save")["action"].startswith("nothing is committed")
    assert JobStore(store, "exact").sequences() == []
    assert told.proc.returncode == 74, told.stdout  # the exit checkpoint could not be made

    # Its next whole save clears the mark: committed, and no word of a cut-off save.
    fresh = run_agent(tmp_path, run_args(tmp_path), job_command(record, 2))
    assert fresh.proc.returncode == 0, fresh.stdout + fresh.stderr
    assert fresh.has_line("start fresh") and "cut-off told" not in fresh.stdout
    assert verify_store(store, record, tmp_path) >= 1


def test_files_left_by_an_uncommitted_save_never_reach_a_checkpoint(tmp_path: Path) -> None:
    """The next sync after the warm restart commits the dir as the job keeps it: the torn
    save's files were moved aside, so no checkpoint holds them."""
    record = tmp_path / "record.jsonl"
    hang_and_kill(tmp_path, agent_env(tmp_path), record)
    after = run_agent(tmp_path, run_args(tmp_path), job_command(record, 28))
    assert after.proc.returncode == 0, after.stdout + after.stderr
    assert verify_store(LocalStore(tmp_path / "store"), record, tmp_path) >= 2
