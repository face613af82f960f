"""The notice-aware cadence end to end: a real agent, a job that writes more than the
final checkpoint could upload in ``--max-pending-upload``, and early syncs that commit it
long before the periodic sync is due."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from tests.agentproc import cli, start_agent

MiB = 1 << 20

#: writes 8 MiB, waits for a checkpoint of it (the agent's status file), writes 16 MiB
#: more, then waits to be stopped; each file appears whole (checkpoint.save_bytes)
JOB = textwrap.dedent("""
    import os, time, checkpoint
    checkpoint.save_bytes("first.bin", os.urandom(8 << 20))
    while not (checkpoint.last_sync() or {}).get("sequence"):
        time.sleep(0.05)
    checkpoint.save_bytes("second.bin", os.urandom(16 << 20))
    print("wrote both", flush=True)
    time.sleep(600)
""")


def test_pending_bytes_beyond_the_threshold_are_committed_by_early_syncs(tmp_path: Path) -> None:
    run = start_agent(
        tmp_path,
        # an hour to the periodic sync; 1 ms of upload at most may wait for the notice
        ["--job-id", "cadence", "--sync-interval", "1h", "--max-pending-upload", "1ms"],
        [sys.executable, "-c", JOB],
    )

    def early_commits() -> list[dict[str, object]]:
        return [
            e for e in run.events() if e["event"] == "sync.committed" and e.get("reason") == "early"
        ]

    run.wait_for(lambda: len(early_commits()) >= 2, timeout=120, what="two early syncs")
    decisions = [e for e in run.events() if e["event"] == "sync.early"]
    first, second = decisions[0], decisions[1]

    # Before any sync has measured a rate, a slow one is assumed; the first early sync
    # uploads 8 MiB, enough to measure the real rate, which the second decision uses.
    assert first["rate_source"] == "assumed"
    assert first["pending_bytes"] >= 8 * MiB
    assert second["rate_source"] == "measured"
    # second.bin; first.bin too when its commit came within 2 s of its write (a file that
    # recent is hashed again by the next sync, so the walk counts it: see docs/cadence.md)
    assert second["pending_bytes"] >= 16 * MiB
    for decision in (first, second):
        assert decision["threshold_seconds"] == 0.001
        assert decision["estimate_seconds"] > decision["threshold_seconds"]
        at_rate = decision["pending_bytes"] / decision["upload_rate"]
        assert decision["estimate_seconds"] == pytest.approx(at_rate, rel=1e-3, abs=1e-3)
        assert decision["sync_reason"] == "early"
        assert decision["periodic_due_in"] > 600  # well before any periodic sync
    assert not [e for e in run.events() if e.get("reason") == "periodic"]
    assert early_commits()[0]["bytes_uploaded"] >= 8 * MiB
    assert early_commits()[1]["bytes_uploaded"] >= 16 * MiB

    run.signal(signal.SIGTERM)
    assert run.wait(60) == 75, run.stderr
    rows = json.loads(cli(tmp_path, "checkpoints", "list", "--job-id", "cadence", "--json").stdout)
    assert [row["reason"] for row in rows][:2] == ["early", "early"]
