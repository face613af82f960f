"""Declaring is binding (issue 22, item 3): once a job has said "my state is consistent"
(``request_sync()``, the sync signal), every later checkpoint, periodic, early or final, is
the dir as it stood at a declaration, never the live dir in between.

The issue's setup: four files per generation, each written atomically, then
``request_sync()``; syncs every second and a SIGTERM at a random moment. Before, about one
checkpoint in seven mixed two generations.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from checkpoint.engine.store.base import LocalStore
from checkpoint.engine.store.s3 import S3Store
from tests.agentproc import agent_env, start_agent
from tests.e2e.test_exact_state import job_command, run_args, verify_store
from tests.e2e.test_savepoints import generations_committed
from tests.servers import SeaweedS3


def run_declaring_job(
    tmp: Path, env: dict[str, str], interval: str, every: int, commits: int, seed: int
) -> None:
    """Run the job (five files per save, 10 ms apart, a request after every ``every``-th
    save) under syncs every ``interval``, SIGTERM it at a random moment, and check that every
    committed checkpoint is a save the job recorded whole."""
    rng = random.Random(seed)
    record = tmp / "record.jsonl"
    cmd = job_command(record, 100000, declare=f"request:{every}")
    run = start_agent(tmp, run_args(tmp, "--sync-interval", interval), cmd, env)
    run.wait_for(lambda: generations_committed(run) >= commits, 90, f"{commits} commits")
    time.sleep(rng.uniform(0.0, 0.5))
    run.signal(signal.SIGTERM)
    assert run.wait(60) == 75, run.stdout + run.stderr
    uri = env["SPOT_AGENT_CHECKPOINT_URI"]
    store = S3Store.from_uri(uri) if uri.startswith("s3://") else LocalStore(tmp / "store")
    try:
        assert verify_store(store, record, tmp) >= commits
    finally:
        store.close()


@pytest.mark.parametrize("seed", [11, 12])
def test_request_sync_job_never_gets_a_mixed_checkpoint(tmp_path: Path, seed: int) -> None:
    """The issue's setup, scaled to this job's pace (a save takes about 60 ms): periodic
    syncs (every 0.3 s) come between requests (after every eighth save)."""
    run_declaring_job(tmp_path, agent_env(tmp_path), "0.3", 8, 6, seed)


def test_declared_states_only_on_s3_with_fast_syncs(
    tmp_path: Path, s3_env: SeaweedS3, s3_bucket: tuple[str, str]
) -> None:
    """Syncs every 0.2 s: most periodic syncs fall inside a save."""
    env = agent_env(tmp_path, {"SPOT_AGENT_CHECKPOINT_URI": f"s3://{s3_bucket[1]}/declared"})
    run_declaring_job(tmp_path, env, "0.2", 3, 8, 13)
