"""The whole entrypoint, as a container runs it: ``python -m agent run ... -- COMMAND``."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.agentproc import EXAMPLE, agent_env, cli, run_agent, start_agent
from tests.stores import store_agent_env

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def test_exit_code_passes_through_and_state_is_committed(tmp_path: Path) -> None:
    r = run_agent(
        tmp_path,
        ["--job-id", "j1"],
        py("""
        import checkpoint, sys
        checkpoint.save_json("state.json", {"done": 41})
        sys.exit(3)
    """),
    )
    assert r.proc.returncode == 3, r.stderr
    assert r.event("sync.committed")["sequence"] == 1
    assert r.event("agent.exit")["exit_code"] == 3
    out = cli(tmp_path, "checkpoints", "list", "--job-id", "j1", "--json")
    rows = json.loads(out.stdout)
    assert [(row["sequence"], row["files"], row["reason"]) for row in rows] == [(1, 1, "exit")]


def test_every_event_carries_job_id_and_attempt(tmp_path: Path) -> None:
    r = run_agent(tmp_path, ["--job-id", "ids"], ["true"])
    events = r.events()
    assert events and all(e.get("job_id") == "ids" for e in events)
    before_the_claim = ("agent.starting", "store.retry", "store.unavailable")
    assert all(e.get("attempt") == 1 for e in events if e["event"] not in before_the_claim)
    assert all(e["timestamp"].endswith("Z") for e in events)


def test_second_run_restores_and_resumes(tmp_path: Path) -> None:
    job = py("""
        import checkpoint, os
        s = checkpoint.load_json("count.json", default={"runs": 0})
        s["runs"] += 1
        checkpoint.save_json("count.json", s)
        print("runs", s["runs"], "restored", repr(os.environ["SPOT_AGENT_RESTORED"]),
              "attempt", os.environ["SPOT_AGENT_ATTEMPT"], flush=True)
    """)
    first = run_agent(tmp_path, ["--job-id", "again"], job)
    second = run_agent(tmp_path, ["--job-id", "again"], job)
    assert "runs 1 restored '' attempt 1" in first.stdout
    assert "runs 2 restored '1' attempt 2" in second.stdout
    assert second.event("restore.done")["sequence"] == 1


def test_missing_command_exits_127(tmp_path: Path) -> None:
    r = run_agent(tmp_path, ["--job-id", "nf"], ["no-such-command-for-spot-agent"])
    assert r.proc.returncode == 127
    assert "command not found" in r.event("child.spawn_failed")["error"]


@pytest.mark.parametrize(
    "args, env, setting",
    [
        (["--checkpoint-uri", "ftp://host/x"], {}, "--checkpoint-uri"),
        (["--checkpoint-uri", "file://relative/dir"], {}, "--checkpoint-uri"),
        (["--checkpoint-uri", "just/a/path"], {}, "--checkpoint-uri"),
        (["--sync-interval", "-5"], {}, "--sync-interval (SPOT_AGENT_SYNC_INTERVAL)"),
        ([], {"SPOT_AGENT_SYNC_INTERVAL": "soon"}, "--sync-interval (SPOT_AGENT_SYNC_INTERVAL)"),
        (["--job-id", "../other-job"], {}, "--job-id (SPOT_AGENT_JOB_ID)"),
        (["--job-id", "a/b"], {}, "--job-id (SPOT_AGENT_JOB_ID)"),
        ([], {"AWS_BATCH_JOB_ID": "x/../../y"}, "AWS_BATCH_JOB_ID"),
        (["--stop-signal", "SIGNOPE"], {}, "--stop-signal"),
        (["--imds", "maybe"], {}, "--imds"),
        (["--upload-reserve", "60s", "--grace-period", "30s"], {}, "--upload-reserve"),
        (
            [],
            {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "127.0.0.1:1338"},
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        ),
    ],
)
def test_configuration_errors_exit_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], setting: str
) -> None:
    r = run_agent(tmp_path, args, ["true"], env=agent_env(tmp_path, env))
    assert r.proc.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"spot-agent: error: {setting}"), lines[0]
    assert r.stdout == ""


def test_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    out = cli(tmp_path, "run", "--job-id", "x")
    assert out.returncode == 2
    assert "no command given" in out.stderr


def test_unusable_store_exits_69(tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    r = run_agent(tmp_path, ["--checkpoint-uri", (blocker / "store").as_uri()], ["true"])
    assert r.proc.returncode == 69
    assert "cannot create" in r.event("store.unavailable")["error"]


def test_child_can_ask_for_a_sync_and_wait_for_it(tmp_path: Path) -> None:
    r = run_agent(
        tmp_path,
        ["--job-id", "req", "--sync-interval", "0"],
        py("""
        import checkpoint, sys
        checkpoint.save_json("state.json", {"step": 1})
        ok = checkpoint.request_sync(wait=20)
        print("synced", ok, checkpoint.last_sync()["sequence"], flush=True)
        sys.exit(0 if ok else 1)
    """),
    )
    assert r.proc.returncode == 0, r.stdout + r.stderr
    assert "synced True 1" in r.stdout
    committed = [e for e in r.events() if e["event"] == "sync.committed"]
    assert [e["reason"] for e in committed] == ["requested"]  # the exit sync had nothing new
    assert r.event("sync.unchanged")["reason"] == "exit"


def test_periodic_syncs_while_the_job_runs(tmp_path: Path) -> None:
    r = run_agent(
        tmp_path,
        ["--job-id", "per", "--sync-interval", "0.2s"],
        py("""
        import checkpoint, time
        for i in range(12):
            checkpoint.save_json("i.json", i)
            time.sleep(0.1)
    """),
    )
    assert r.proc.returncode == 0
    periodic = [
        e for e in r.events() if e["event"] == "sync.committed" and e["reason"] == "periodic"
    ]
    assert len(periodic) >= 2
    seqs = [e["sequence"] for e in r.events() if e["event"] == "sync.committed"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_sigterm_is_an_interruption(tmp_path: Path) -> None:
    child = py("""
        import checkpoint, json, os, signal, sys, time
        def stop(*_):
            n = checkpoint.notice()
            checkpoint.save_json("state.json", {"stopped": True, "notice": n})
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        checkpoint.save_json("state.json", {"stopped": False})
        print("ready", flush=True)
        time.sleep(60)
    """)
    r = start_agent(tmp_path, ["--job-id", "term", "--grace-period", "20s"], child)
    r.wait_for(lambda: r.has_line("ready"), what="the child to start")
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 75
    notice = r.event("notice.interruption")
    assert notice["source"] == "sigterm"
    assert r.event("shutdown.child_exited")["exit_code"] == 0
    assert r.event("agent.exit")["committed"] == 1  # the final sync is the first commit
    dst = tmp_path / "restored"
    out = cli(tmp_path, "checkpoints", "restore", "--job-id", "term", "--to", str(dst))
    assert out.returncode == 0, out.stderr
    state = json.loads((dst / "state.json").read_text())
    assert state["stopped"] is True
    assert state["notice"]["source"] == "sigterm" and state["notice"]["deadline"]


def test_child_that_ignores_the_stop_signal_is_killed_before_the_deadline(tmp_path: Path) -> None:
    child = py("""
        import checkpoint, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        checkpoint.save_json("state.json", {"step": 9})
        print("ready", flush=True)
        time.sleep(120)
    """)
    grace = 4.0
    r = start_agent(
        tmp_path,
        ["--job-id", "stubborn", "--grace-period", f"{grace}s", "--upload-reserve", "1.5s"],
        child,
    )
    r.wait_for(lambda: r.has_line("ready"), what="the child to start")
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 75
    took = time.monotonic() - t0
    killed = r.event("shutdown.child_killed")
    assert killed["exit_code"] == 128 + signal.SIGKILL
    final = r.event("agent.exit")
    assert final["committed"] is not None and final["seconds_left"] > 0
    assert took < grace + 2, f"shutdown took {took:.1f}s for a {grace}s grace period"


def test_forwarded_signals_reach_the_job(tmp_path: Path) -> None:
    child = py("""
        import signal, sys, time
        got = []
        def on(n, f):
            got.append(signal.Signals(n).name)
            print("got", got[-1], flush=True)
        for s in (signal.SIGHUP, signal.SIGUSR2, signal.SIGINT):
            signal.signal(s, on)
        print("ready", flush=True)
        while len(got) < 3:
            time.sleep(0.01)
        sys.exit(5)
    """)
    r = start_agent(tmp_path, ["--job-id", "fwd"], child)
    r.wait_for(lambda: r.has_line("ready"), what="the child to start")
    for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGINT):
        r.signal(sig)
        r.wait_for(lambda sig=sig: r.has_line(f"got {sig.name}"), what=f"{sig.name} to arrive")
    assert r.wait(20) == 5


def primes(tmp_path: Path, job: str, *extra: str) -> list[str]:
    return [PY, str(EXAMPLE), "--limit", "1e8", "--segment", "1e6", *extra]


def test_example_uninterrupted_gives_the_known_answer(tmp_path: Path) -> None:
    plain = run_agent(tmp_path, ["--job-id", "plain"], primes(tmp_path, "plain"))
    assert plain.proc.returncode == 0, plain.stderr
    assert "primes below 100,000,000: 5,761,455" in plain.stdout


def test_example_interrupted_and_resumed_matches_an_uninterrupted_run(
    tmp_path: Path, store_url: str
) -> None:
    env = store_agent_env(tmp_path, store_url)
    cmd = primes(tmp_path, "cut", "--segment-delay", "0.03")
    state = tmp_path / "state" / "spot-agent" / "jobs" / "cut" / "checkpoint" / "state.json"
    first = start_agent(tmp_path, ["--job-id", "cut", "--sync-interval", "0.5s"], cmd, env=env)
    first.wait_for(
        lambda: state.exists() and json.loads(state.read_text())["next"] >= 20_000_000,
        what="a fifth of the work",
    )
    first.signal(signal.SIGTERM)
    assert first.wait(60) == 75, first.stderr
    assert "stopping at" in first.stdout
    saved = json.loads(state.read_text())
    assert 0 < saved["next"] < 100_000_000
    periodic = [e for e in first.events() if e["event"] == "sync.committed"]
    assert periodic, "periodic syncs while the job ran"
    # A retry on a new machine: the local working dir is gone, only the store remains.
    shutil.rmtree(state.parent)
    second = run_agent(tmp_path, ["--job-id", "cut"], cmd, env=env)
    assert second.proc.returncode == 0, second.stderr
    assert f"resuming at {saved['next']:,}" in second.stdout
    assert "primes below 100,000,000: 5,761,455" in second.stdout
    assert json.loads((state.parent / "result.json").read_text()) == {
        "limit": 100_000_000,
        "primes": 5_761_455,
        "largest": 99_999_989,
    }
    restored = second.event("restore.done")
    assert restored["files_downloaded"] >= 1 and restored["bytes_downloaded"] > 0

    listing = cli(tmp_path, "checkpoints", "list", "--job-id", "cut", "--json", env=env)
    rows = json.loads(listing.stdout)
    assert rows[-1]["reason"] == "exit" and rows[-1]["progress"]["done"] == "100.0%"


def test_checkpoints_gc_keeps_what_is_referenced(tmp_path: Path) -> None:
    job = py("""
        import checkpoint, os
        n = checkpoint.load_json("n.json", default=0) + 1
        checkpoint.save_json("n.json", n)
        checkpoint.save_bytes(f"blob{n}", os.urandom(1000))
        if n > 1:
            os.remove(os.path.join(os.environ["CHECKPOINT_DIR"], f"blob{n - 1}"))
    """)
    for _ in range(4):
        assert run_agent(tmp_path, ["--job-id", "g"], job).proc.returncode == 0
    refused = cli(tmp_path, "checkpoints", "gc", "--job-id", "g", "--min-age", "0")
    assert refused.returncode == 2 and "--no-agent-running" in refused.stderr
    gc = [
        "checkpoints",
        "gc",
        "--job-id",
        "g",
        "--keep",
        "1",
        "--min-age",
        "0",
        "--no-agent-running",
    ]
    dry = cli(tmp_path, *gc, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would delete 3 old checkpoints")
    out = cli(tmp_path, *gc)
    assert out.returncode == 0, out.stderr
    # The 3 pruned checkpoints referenced 3 n.json versions and blob1..blob3: small files,
    # one pack per checkpoint.
    assert out.stdout.startswith("deleted 3 old checkpoints and 0 unreferenced blobs"), out.stdout
    assert "and 3 unreferenced packs" in out.stdout, out.stdout
    dst = tmp_path / "restored"
    assert (
        cli(tmp_path, "checkpoints", "restore", "--job-id", "g", "--to", str(dst)).returncode == 0
    )
    assert json.loads((dst / "n.json").read_text()) == 4
    assert sorted(p.name for p in dst.iterdir()) == ["blob4", "n.json"]


def test_sigterm_while_the_agent_is_still_starting_is_an_interruption(tmp_path: Path) -> None:
    # The SIGTERM lands right after the entry point's first lines, before the slow imports
    # and the runner's own handlers: it must not kill the agent (143, or ignored as PID 1).
    starter = textwrap.dedent(
        """
        import os, signal, sys, time
        sys.argv = ["spot-agent", *sys.argv[1:]]
        from agent.process import early
        early.install(sys.argv)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # counts against the grace period
        from agent.cli import main
        sys.exit(main())
        """
    )
    env = agent_env(tmp_path)
    import subprocess

    out = subprocess.run(
        [PY, "-c", starter, "run", "--job-id", "early", "--grace-period", "20s", "--", "true"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 75, out.stdout + out.stderr
    events = {e["event"]: e for e in map(json.loads, out.stdout.splitlines())}
    assert events["notice.interruption"]["source"] == "sigterm"
    assert events["notice.interruption"]["seconds_left"] < 19.5  # counted from the signal
    assert "child.started" not in events
    assert events["agent.exit"]["exit_code"] == 75
