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

    def both_committed() -> bool:  # a checkpoint taken early holds both files
        return any(int(str(e["bytes"])) >= 24 * MiB for e in early_commits())

    run.wait_for(both_committed, timeout=120, what="early syncs of both files")
    decisions = [e for e in run.events() if e["event"] == "sync.early"]
    first, later = decisions[0], decisions[1:]

    # Before any sync has measured a rate, a slow one is assumed; the first early sync
    # uploads 8 MiB, enough to measure the real rate, which the later decisions use.
    assert first["rate_source"] == "assumed"
    assert first["pending_bytes"] >= 8 * MiB
    assert later and all(d["rate_source"] == "measured" for d in later)
    # second.bin (and first.bin again when its commit came within 2 s of its write: the
    # next sync reads so recent a file again, so the walk counts it; see docs/cadence.md)
    assert any(d["pending_bytes"] >= 16 * MiB for d in later)
    for decision in decisions:
        assert decision["threshold_seconds"] == 0.001
        assert decision["estimate_seconds"] > decision["threshold_seconds"]
        at_rate = decision["pending_bytes"] / decision["upload_rate"]
        assert decision["estimate_seconds"] == pytest.approx(at_rate, rel=1e-3, abs=1e-3)
        assert decision["sync_reason"] == "early"
        assert decision["periodic_due_in"] > 600  # well before any periodic sync
    assert not [e for e in run.events() if e.get("reason") == "periodic"]
    assert early_commits()[0]["bytes_uploaded"] >= 8 * MiB
    assert sum(int(str(e["bytes_uploaded"])) for e in early_commits()) >= 24 * MiB

    run.signal(signal.SIGTERM)
    assert run.wait(60) == 75, run.stderr
    rows = json.loads(cli(tmp_path, "checkpoints", "list", "--job-id", "cadence", "--json").stdout)
    reasons = [row["reason"] for row in rows]
    assert reasons.count("early") >= 2 and set(reasons) <= {"early", "interruption"}


def test_a_restored_checkpoint_is_not_pending(tmp_path: Path) -> None:
    """A retry restores the checkpoint: nothing of it is pending, so no early sync follows
    (the restore remembers what it placed, as a sync does)."""
    write = textwrap.dedent("""
        import os, time, checkpoint
        checkpoint.save_bytes("state.bin", os.urandom(8 << 20))
        old = time.time() - 3600  # not "just written" (see docs/cadence.md)
        os.utime(os.path.join(os.environ["CHECKPOINT_DIR"], "state.bin"), (old, old))
    """)
    args = ["--job-id", "retry", "--sync-interval", "1h", "--max-pending-upload", "1ms"]
    first = start_agent(tmp_path, args, [sys.executable, "-c", write])
    assert first.wait(120) == 0, first.stderr
    # the retry runs long enough for several walks (one every 2 s), then exits
    retry = start_agent(
        tmp_path,
        [*args, "--log-level", "debug"],
        [sys.executable, "-c", "import time; time.sleep(7)"],
    )
    assert retry.wait(120) == 0, retry.stderr
    assert retry.event("restore.done")["bytes"] == 8 * MiB
    walks = [e for e in retry.events() if e["event"] == "sync.pending"]
    assert len(walks) >= 2 and all(w["pending_bytes"] == 0 for w in walks)
    assert not [e for e in retry.events() if e["event"] == "sync.early"]
    assert retry.event("sync.unchanged")["reason"] == "exit"


#: writes 256 MiB (incompressible, not a hole) before any sync, then waits to be stopped
BIG_STATE = textwrap.dedent("""
    import os, signal, sys, checkpoint
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    checkpoint.save_bytes("state.bin", os.urandom(256 << 20))
    print("state", "written", flush=True)  # the words apart: agent.start logs the command
    signal.pause()
""")


def test_a_large_state_before_the_first_sync_gets_a_reserve_that_fits_it(tmp_path: Path) -> None:
    """Issue 22, item 9: with no upload rate measured, the reserve was the minimum (3.3 s of
    a 10 s grace period) whatever was pending; now the pending bytes are sized at the
    assumed rate, still capped at 80% of the time left."""
    run = start_agent(
        tmp_path,
        ["--job-id", "big", "--sync-interval", "1h", "--grace-period", "10s"],
        [sys.executable, "-c", BIG_STATE],
    )
    run.wait_for(lambda: "state written" in run.stdout, timeout=120, what="the job's state")
    run.signal(signal.SIGTERM)
    assert run.wait(120) == 75, run.stdout + run.stderr
    plan = run.event("shutdown.plan")
    assert plan["pending_bytes"] >= 256 * MiB
    # 1.5 x 32 s wanted; what the time left allows: 80% of it
    assert plan["reserve_seconds"] > 3.4, plan  # more than the minimum it got before
    assert plan["reserve_seconds"] >= 0.8 * plan["seconds_left"] - 0.01, plan
    assert plan["rate_source"] == "assumed" and plan["upload_rate"] == 8 * MiB
    committed = run.event("sync.committed")
    assert committed["reason"] == "interruption" and committed["bytes"] >= 256 * MiB
