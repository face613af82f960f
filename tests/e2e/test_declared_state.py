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

from checkpoint.engine.store.base import Store
from tests.agentproc import start_agent
from tests.e2e.test_exact_state import job_command, run_args, verify_store
from tests.e2e.test_savepoints import generations_committed
from tests.stores import store_agent_env


@pytest.mark.parametrize(
    ("store_url", "interval", "every", "commits", "seed"),
    [
        # The setup, scaled to this job's pace (a save takes about 60 ms): periodic
        # syncs (every 0.3 s) come between requests (after every eighth save).
        ("local", "0.3", 8, 6, 11),
        ("local", "0.3", 8, 6, 12),
        # Syncs every 0.2 s: most periodic syncs fall inside a save.
        ("s3", "0.2", 3, 8, 13),
    ],
    indirect=["store_url"],
    ids=["local-seed11", "local-seed12", "s3-fast-syncs"],
)
def test_request_sync_job_never_gets_a_mixed_checkpoint(
    tmp_path: Path,
    store_url: str,
    any_store: Store,
    interval: str,
    every: int,
    commits: int,
    seed: int,
) -> None:
    """Run the job (five files per save, 10 ms apart, a request after every ``every``-th
    save) under syncs every ``interval``, SIGTERM it at a random moment, and check that every
    committed checkpoint is a save the job recorded whole."""
    rng = random.Random(seed)
    record = tmp_path / "record.jsonl"
    cmd = job_command(record, 100000, declare=f"request:{every}")
    env = store_agent_env(tmp_path, store_url)
    run = start_agent(tmp_path, run_args(tmp_path, "--sync-interval", interval), cmd, env)
    run.wait_for(lambda: generations_committed(run) >= commits, 90, f"{commits} commits")
    time.sleep(rng.uniform(0.0, 0.5))
    run.signal(signal.SIGTERM)
    assert run.wait(60) == 75, run.stdout + run.stderr
    assert verify_store(any_store, record, tmp_path) >= commits
