"""Save points end to end: no committed checkpoint mixes two saves of a multi-file job.

The job (tests/e2e/savepointjob.py, or its shell twin) saves four files per generation,
30 ms apart, asks for a checkpoint after each save; the agent also syncs every second. A
SIGTERM (or a SIGKILL of the job in the middle of a save) comes at a random moment. Then
every committed checkpoint is restored and checked: all four files, one generation.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import LocalStore, Store
from tests.agentproc import AgentRun, agent_env, start_agent
from tests.stores import store_agent_env

HERE = Path(__file__).resolve().parent
JOB = [sys.executable, str(HERE / "savepointjob.py")]
NAMES = ("model.bin", "optim.bin", "rng.bin", "meta.json")
TRAINER_FILES = (
    "model.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "trainer_state.json",
    "training_args.bin",
)
SHELL_JOB = r"""
exec 9>>"$SPOT_AGENT_LOCK_FILE"
stop=0; trap 'stop=1' TERM
put() {
  printf '%s\n%s\n' "$g" "$1" >"$CHECKPOINT_DIR/.$1.tmp" &&
    mv "$CHECKPOINT_DIR/.$1.tmp" "$CHECKPOINT_DIR/$1"
}
g=$(head -n1 "$CHECKPOINT_DIR/meta.json" 2>/dev/null || echo 0)
while [ "$g" -lt 100000 ] && [ "$stop" = 0 ]; do
  g=$((g + 1))
  # One chain: if any step fails (the stop signal kills mv or sleep), the mark stays.
  flock 9 && echo "$$" >"$SPOT_AGENT_LOCK_FILE" &&
    put model.bin && sleep 0.03 && put optim.bin && sleep 0.03 &&
    put rng.bin && sleep 0.03 && put meta.json &&
    : >"$SPOT_AGENT_LOCK_FILE"
  flock -u 9
  kill -USR1 "$SPOT_AGENT_PID"
done
"""
RUN_ARGS = ["--sync-interval", "1", "--checkpoint-keep", "0", "--grace-period", "20"]


def check_every_checkpoint(store: Store, job_id: str, tmp: Path) -> int:
    """Restore each committed checkpoint; all four files of one generation, or none."""
    job = JobStore(store, job_id)
    sequences = job.sequences()
    for seq in sequences:
        into = tmp / f"restored-{seq}"
        r = Checkpointer(job, into).restore(seq, into=into)
        assert r.manifest is not None
        present = {
            n: (into / n).read_bytes().split(b"\n", 1)[0] for n in NAMES if (into / n).exists()
        }
        assert not present or (len(present) == len(NAMES) and len(set(present.values())) == 1), (
            f"checkpoint {seq} mixes saves: {present}"
        )
    return len(sequences)


def generations_committed(run: AgentRun) -> int:
    return sum(1 for e in run.events() if e.get("event") == "sync.committed")


def restore_each(store: Store, job_id: str, tmp: Path) -> list[tuple[int, Path]]:
    job = JobStore(store, job_id)
    out = []
    for seq in job.sequences():
        into = tmp / f"restored-{seq}"
        assert Checkpointer(job, into).restore(seq, into=into).manifest is not None
        out.append((seq, into))
    return out


def interrupt_at_random(tmp: Path, command: list[str], env: dict[str, str], seed: int) -> AgentRun:
    rng = random.Random(seed)
    run = start_agent(tmp, ["--job-id", "multi", *RUN_ARGS], command, env)
    run.wait_for(lambda: generations_committed(run) >= 2, what="two commits")
    time.sleep(rng.uniform(0.0, 1.5))
    run.signal(signal.SIGTERM)
    assert run.wait(60) == 75, run.stdout + run.stderr
    return run


@pytest.mark.parametrize(
    ("store_url", "seed"), [("local", 1), ("local", 2), ("s3", 3)], indirect=["store_url"]
)
def test_python_save_points_never_mix_generations(
    tmp_path: Path, store_url: str, any_store: Store, seed: int
) -> None:
    env = store_agent_env(tmp_path, store_url)
    run = interrupt_at_random(tmp_path, [*JOB, "api", "100000"], env, seed)
    assert run.has_line(f"stopped {run.job_stdout().split('stopped ')[-1].split()[0]}")
    assert check_every_checkpoint(any_store, "multi", tmp_path) >= 2


def test_shell_job_with_flock_never_mixes_generations(tmp_path: Path) -> None:
    interrupt_at_random(tmp_path, ["sh", "-c", SHELL_JOB], agent_env(tmp_path), seed=4)
    assert check_every_checkpoint(LocalStore(tmp_path / "store"), "multi", tmp_path) >= 2


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_job_killed_in_the_middle_of_a_save_is_not_committed(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    run = start_agent(tmp_path, ["--job-id", "multi", *RUN_ARGS], [*JOB, "api", "100000"])
    run.wait_for(lambda: generations_committed(run) >= 2, what="two commits")
    pid = int(run.job_stdout().split("pid ", 1)[1].split()[0])
    run.wait_for(lambda: run.job_stdout().rstrip().rsplit("\n", 1)[-1].startswith("saving"))
    time.sleep(rng.uniform(0.0, 0.09))  # somewhere among the four writes
    os.kill(pid, signal.SIGKILL)
    assert run.wait(60) == 128 + signal.SIGKILL, run.stdout + run.stderr
    assert check_every_checkpoint(LocalStore(tmp_path / "store"), "multi", tmp_path) >= 2


def test_sqlite_in_wal_mode_restores_a_prefix_of_its_transactions(tmp_path: Path) -> None:
    run = interrupt_at_random(tmp_path, [*JOB, "sqlite", "100000"], agent_env(tmp_path), 8)
    lines = run.job_stdout().splitlines()
    committed = max(int(line.split()[1]) for line in lines if line.startswith("committed "))
    checkpoints = restore_each(LocalStore(tmp_path / "store"), "multi", tmp_path)
    assert len(checkpoints) >= 2
    rows_seen = []
    for seq, into in checkpoints:
        conn = sqlite3.connect(into / "tx.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], seq
            rows = [n for (n,) in conn.execute("SELECT n FROM tx ORDER BY n")]
        finally:
            conn.close()
        assert rows == list(range(1, len(rows) + 1)), f"checkpoint {seq} is not a prefix"
        rows_seen.append(len(rows))
    assert rows_seen == sorted(rows_seen) and 0 < rows_seen[-1] <= committed


def test_trainer_checkpoint_dirs_are_restored_whole(tmp_path: Path) -> None:
    interrupt_at_random(tmp_path, [*JOB, "trainer", "100000"], agent_env(tmp_path), 9)
    checkpoints = restore_each(LocalStore(tmp_path / "store"), "multi", tmp_path)
    assert len(checkpoints) >= 2
    for seq, into in checkpoints:
        dirs = sorted(into.glob("checkpoint-*"))
        assert 1 <= len(dirs) <= 2, (seq, dirs)
        for d in dirs:
            step = d.name.split("-")[1].encode()
            files = {p.name: p.read_bytes().split(b"\n", 1)[0] for p in d.iterdir()}
            assert sorted(files) == sorted(TRAINER_FILES), f"checkpoint {seq}: {d.name} partial"
            assert set(files.values()) == {step}, f"checkpoint {seq}: {d.name} mixes steps"


MMAP_JOB = """
import mmap, os, time
import checkpoint

d = checkpoint.directory()
old = time.time() - 3600  # old enough for the stat cache to vouch for a file
(d / "big.bin").write_bytes(os.urandom(2 << 20))
os.utime(d / "big.bin", (old, old))
path = d / "table.bin"
path.write_bytes(bytes(4096))
checkpoint.handle_stop()
with open(path, "r+b") as fh, mmap.mmap(fh.fileno(), 4096) as mm:
    mm[:5] = b"first"
    os.utime(path, (old, old))
    assert checkpoint.request_sync(wait=30)
    mm[:6] = b"second"  # the page is dirty already: size and times may well not change
print("wrote second", flush=True)  # and the map is gone: the final sync cannot see it
# The stop signal itself, not the notice file: a job that left on the notice could be hit
# by the signal while Python shuts down (143, not a declared exit 0).
while checkpoint.stop_requested() is None:
    time.sleep(0.01)
"""


def interrupted_mmap_job(tmp_path: Path, rehash: str) -> tuple[Path, dict[str, object]]:
    """The final checkpoint after a SIGTERM, restored; and its ``sync.committed`` event."""
    args = ["--job-id", "mm", "--rehash", rehash, "--sync-interval", "0"]
    run = start_agent(tmp_path, args, [sys.executable, "-c", MMAP_JOB])
    run.wait_for(lambda: run.has_line("wrote second"), what="the second write")
    run.signal(signal.SIGTERM)
    assert run.wait(60) == 75, run.stdout + run.stderr
    final = [e for e in run.events() if e["event"] == "sync.committed"][-1]
    assert final["reason"] == "interruption"
    [(_seq, into)] = restore_each(LocalStore(tmp_path / "store"), "mm", tmp_path)[-1:]
    return into, final


def test_final_checkpoint_reads_again_what_the_job_wrote_since_the_last_sync(
    tmp_path: Path,
) -> None:
    """Issue 23: the job mapped table.bin for writing after the last sync began; by the final
    sync the map is gone and the stat is unchanged. The final sync reads that file again,
    and trusts the stat of big.bin, which nothing wrote."""
    into, final = interrupted_mmap_job(tmp_path, "open")
    assert (into / "table.bin").read_bytes().startswith(b"second")
    assert final["bytes_hashed"] == 4096  # table.bin alone: big.bin is not read again


def test_rehash_all_makes_the_final_checkpoint_read_every_file_again(tmp_path: Path) -> None:
    into, final = interrupted_mmap_job(tmp_path, "all")
    assert (into / "table.bin").read_bytes().startswith(b"second")
    assert final["bytes_hashed"] == 4096 + (2 << 20)
