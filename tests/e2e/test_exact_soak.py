"""Soak: agent and job SIGKILLed together, at random moments, over and over (issue 22).

The job (tests/e2e/exactjob.py) records the exact tree of each whole save outside its
checkpoint dir, and on every start refuses a dir that is neither empty nor one of those
trees (``SAW-UNCOMMITTED``, exit 3): the agent must never hand it a file of a save that
was not committed whole. Each cycle starts a real ``spot-agent run`` with syncs every
0.05-0.5 s and kills the agent and every process of the job at once (as a lost machine
would) at one of these moments: during the restore (right after ``agent.start``), in the
middle of a save (the lock file is not empty), right after a commit (the next sync's
freeze, pack build or repack is under way), or at a random time. Some cycles lose the
checkpoint dir (a new machine). Then the job runs to its end, and every committed
checkpoint is restored and compared with the job's record: each must be a whole save.

``soak(quick, full)``: a few cycles in the default suite, many with ``pytest --soak`` or
``SPOT_AGENT_SOAK=1``. The seed is new each run unless ``SPOT_AGENT_SOAK_SEED`` is set;
failures name it. Counts are printed (``-s``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from checkpoint.engine.store.base import Store
from tests.agentproc import AgentRun, run_agent, start_agent
from tests.e2e.test_exact_state import job_command, run_args, verify_store
from tests.stores import store_agent_env

MOMENTS = ("restore", "mid-save", "after-commit", "random", "random")
INTERVALS = ("0.05", "0.2", "0.5")


def kill_all(run: AgentRun) -> None:
    """SIGKILL the agent and every process below it, at once."""
    with contextlib.suppress(psutil.Error):
        tree = [psutil.Process(run.proc.pid), *psutil.Process(run.proc.pid).children(True)]
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
    run.wait(30)


def wait_for_moment(run: AgentRun, moment: str, lock: Path, rng: random.Random) -> None:
    """Return at the moment to kill (or once the agent is gone or the moment never came)."""
    with contextlib.suppress(AssertionError):
        if moment == "restore":
            run.wait_for(lambda: '"agent.start"' in run.stdout, 30, "agent.start")
            time.sleep(rng.uniform(0, 0.03))
            return
        run.wait_for(lambda: '"child.started"' in run.stdout, 30, "the job")
        if moment == "mid-save":
            time.sleep(rng.uniform(0, 0.5))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not _size(lock):
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.02))
        elif moment == "after-commit":
            seen = run.stdout.count('"sync.committed"')
            run.wait_for(lambda: run.stdout.count('"sync.committed"') > seen, 5, "a commit")
            time.sleep(rng.uniform(0, 0.05))
        else:
            time.sleep(rng.uniform(0, 1.5))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def soak(tmp: Path, env: dict[str, str], store: Store, cycles: int, declare: str) -> None:
    fixed = os.environ.get("SPOT_AGENT_SOAK_SEED")
    seed = int(fixed) if fixed else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    where = f"seed {seed} (replay with SPOT_AGENT_SOAK_SEED={seed})"
    record = tmp / "record.jsonl"
    lock = tmp / "dir" / ".spot-agent" / "save.lock"
    counts: collections.Counter[str] = collections.Counter()
    for cycle in range(cycles):
        if cycle and rng.random() < 0.15:
            shutil.rmtree(tmp / "dir", ignore_errors=True)  # a new machine
            counts["dir lost"] += 1
        moment = rng.choice(MOMENTS)
        args = run_args(tmp, "--sync-interval", rng.choice(INTERVALS), "--checkpoint-keep", "0")
        run = start_agent(tmp, args, job_command(record, 100000, declare=declare), env)
        wait_for_moment(run, moment, lock, rng)
        kill_all(run)
        out = run.stdout
        counts[f"killed at {moment}"] += 1
        counts["commits"] += out.count('"sync.committed"')
        counts["restores"] += out.count('"restore.done"')
        counts["cut-off saves found"] += out.count('"restore.cut_off_save"')
        counts["restores that moved entries aside"] += out.count('"moved_to"')
        counts["job told of a cut-off save"] += out.count("cut-off told")
        assert "SAW-UNCOMMITTED" not in out, f"[{where}, cycle {cycle}, {moment}]\n{out}"
        assert "Traceback" not in run.stderr, f"[{where}, cycle {cycle}]\n{run.stderr}"
    # The job's end is its first save at least: a seed whose every cycle was killed before a
    # commit (at a restore, early in a save) still leaves one checkpoint to verify.
    last = run_agent(tmp, run_args(tmp), job_command(record, 1, declare=declare), env)
    assert last.proc.returncode in (0, 74), f"[{where}]\n{last.stdout}\n{last.stderr}"
    assert "SAW-UNCOMMITTED" not in last.stdout, f"[{where}]\n{last.stdout}"
    counts["checkpoints verified"] = verify_store(store, record, tmp)
    print(f"exact soak ({declare}), {cycles} cycles, {where}: {dict(sorted(counts.items()))}")
    assert counts["checkpoints verified"] >= 1


@pytest.mark.long
@pytest.mark.parametrize(
    ("store_url", "declare"),
    [
        pytest.param("local", "saving", marks=pytest.mark.soak(6, 60)),
        pytest.param("local", "request:3", marks=pytest.mark.soak(6, 60)),
        pytest.param("s3", "saving", marks=pytest.mark.soak(4, 30)),
    ],
    indirect=["store_url"],
)
def test_kill_9_soak_commits_and_restores_only_whole_saves(
    tmp_path: Path, store_url: str, any_store: Store, soak_cycles: int, declare: str
) -> None:
    soak(tmp_path, store_agent_env(tmp_path, store_url), any_store, soak_cycles, declare)
