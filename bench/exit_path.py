"""The agent's own time around a sync (issue 23): its way out after the job, and its way in
to the job on a warm restart, for one or more checkouts side by side.

    python -m bench.exit_path [--files 30000] [--shard-mib 64] [--reps 3]
                              [--stores file,s3] [--only exit,warm] CODE_DIR [CODE_DIR ...]

Each CODE_DIR is a checkout of spot-agent ("before" and "after"); repetitions rotate over
them. One local SeaweedFS (127.0.0.1, requests counted by the server) serves the S3 rows.

- **exit**: ``--files`` files of 1 KiB in dirs of 100, uploaded once per checkout and
  store, then per repetition a warm ``spot-agent run`` whose job exits 0 at once: seconds
  from the job's end (``child.exited`` in the agent's log) to the agent's process exit,
  and the final sync's own logged seconds; then one whose job waits and the agent gets
  SIGTERM: seconds from the signal to ``shutdown.final_checkpoint`` (committed) and to
  the process exit.
- **warm**: a training dir (5 x ``--shard-mib`` MiB + 4 small files) on S3, uploaded once
  per checkout; per repetition a warm run until its job starts (the job writes the time),
  the S3 requests made until then by kind, and where the time went by the agent's events.

Every checkout gets its own copy of the data (a dir's local index is one job's) and its
own job id. Medians per checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .agentruns import _timestamp, event_list
from .main import s3_env
from .s3counts import RequestCounter, start_counted_seaweedfs
from .scale import age_files, write_random

KIB = 1024
#: the warm-restart job: write the time it started, then exit
STAMP_JOB = ["sh", "-c", 'date +%s.%N > "$0"']


def make_files(root: Path, count: int) -> None:
    for i in range(count):
        d = root / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:07d}").write_bytes(os.urandom(KIB))
    age_files(root)


def make_training(root: Path, shard_mib: int) -> None:
    root.mkdir(parents=True)
    for i in range(5):
        write_random(root / f"shard-{i}.bin", shard_mib)
    for name in ("optimizer_state.json", "config.json", "rng.bin", "step.txt"):
        (root / name).write_bytes(os.urandom(3000))
    age_files(root)


class Agent:
    """``python -m agent run`` of one checkout, on one dir and store."""

    def __init__(self, code: Path, env0: dict[str, str], uri: str, data: Path, job: str) -> None:
        self.env = {k: v for k, v in env0.items() if not k.startswith(("SPOT_AGENT_", "AWS_BATCH"))}
        self.env.update(
            PYTHONPATH=str(code),
            PYTHONUNBUFFERED="1",
            XDG_STATE_HOME=str(data.parent / f"state-{job}"),
            SPOT_AGENT_IMDS="off",
            SPOT_AGENT_SYNC_INTERVAL="0",
            SPOT_AGENT_SSE="none",
            SPOT_AGENT_CHECKPOINT_URI=uri,
            SPOT_AGENT_CHECKPOINT_DIR=str(data),
            SPOT_AGENT_JOB_ID=job,
        )
        self.out = data.parent / f"{job}.out"

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        with open(self.out, "wb") as fh:
            return subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--", *command],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.out.parent,
            )

    def events(self) -> list[dict[str, Any]]:
        return event_list(self.out.read_text(errors="replace"))

    def at(self, name: str) -> float:
        return next(_timestamp(e) for e in self.events() if e.get("event") == name)

    def event(self, name: str) -> dict[str, Any]:
        return next(e for e in reversed(self.events()) if e.get("event") == name)


def exit_rep(agent: Agent) -> dict[str, Any]:
    proc = agent.start("true")
    code = proc.wait(900)
    ended = time.time()
    assert code == 0, agent.out.read_text()[-2000:]
    final = agent.event("sync.unchanged")
    row = {
        "job_end_to_exit": ended - agent.at("child.exited"),
        "final_sync_logged": float(final["seconds"]),
    }
    proc = agent.start(sys.executable, "-c", "import time; time.sleep(900)")
    while not any(e.get("event") == "child.started" for e in agent.events()):
        time.sleep(0.01)
        assert proc.poll() is None, agent.out.read_text()[-2000:]
    told = time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(900)
    ended = time.time()
    assert code == 75, agent.out.read_text()[-2000:]
    row.update(
        sigterm_to_committed=agent.at("shutdown.final_checkpoint") - told,
        sigterm_to_exit=ended - told,
    )
    return row


def warm_rep(agent: Agent, counter: RequestCounter) -> dict[str, Any]:
    stamp = agent.out.parent / "job-started"
    stamp.unlink(missing_ok=True)
    time.sleep(0.5)  # the server counts a request once answered: the last run's, first
    before = counter.snapshot()
    wall = time.time()
    proc = agent.start(*STAMP_JOB, str(stamp))
    while not stamp.exists() or not stamp.read_text().strip():
        assert proc.poll() is None or stamp.exists(), agent.out.read_text()[-2000:]
        time.sleep(0.005)
    requests = counter.since(before)  # until the job started
    code = proc.wait(300)
    assert code == 0, agent.out.read_text()[-2000:]
    marks = ("agent.starting", "agent.start", "restore.done", "child.started")
    return {
        "to_job_start": float(stamp.read_text()) - wall,
        "events_at": {m: round(agent.at(m) - wall, 3) for m in marks},
        "requests": requests,
    }


def medians(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    return {k: round(statistics.median(r[k] for r in rows), 3) for k in keys}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("code", nargs="+", type=Path, help="checkouts of spot-agent")
    p.add_argument("--files", type=int, default=30_000)
    p.add_argument("--shard-mib", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--stores", default="file,s3")
    p.add_argument("--only", default="exit,warm")
    a = p.parse_args(argv)
    codes = [c.resolve() for c in a.code]
    work = Path(tempfile.mkdtemp(prefix="spot-agent-exit-"))
    server, counter = start_counted_seaweedfs(work / "seaweedfs", volume_size_limit_mb=256)
    try:
        env0 = {**os.environ, **s3_env(server, work)}
        os.environ.update(env0)
        import boto3

        boto3.client("s3").create_bucket(Bucket="exit")
        only, stores = a.only.split(","), a.stores.split(",")
        plans: list[tuple[str, str, Agent]] = []  # (what, store, agent), one per checkout
        for n, code in enumerate(codes):
            if "exit" in only:
                data = work / f"files-{n}"
                make_files(data, a.files)
                for store in stores:
                    job = f"files-{store}-{n}"
                    uri = f"s3://exit/{job}" if store == "s3" else (work / job).as_uri()
                    plans.append(("exit", store, Agent(code, env0, uri, data, job)))
            if "warm" in only:
                data = work / f"training-{n}"
                make_training(data, a.shard_mib)
                plans.append(("warm", "s3", Agent(code, env0, f"s3://exit/t{n}", data, f"t{n}")))
        for _what, _store, agent in plans:  # the first upload
            assert agent.start("true").wait(1800) == 0, agent.out.read_text()[-2000:]
        results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for rep in range(a.reps):
            order = plans[rep % len(plans) :] + plans[: rep % len(plans)]
            for what, store, agent in order:
                n = next(i for i, c in enumerate(codes) if str(c) == agent.env["PYTHONPATH"])
                row = exit_rep(agent) if what == "exit" else warm_rep(agent, counter)
                results.setdefault((what, store, n), []).append(row)
                print(json.dumps({"what": what, "store": store, "code": str(codes[n]), **row}))
        for (what, store, n), rows in sorted(results.items()):
            print(f"{what:5} {store:4} {codes[n]}: {medians(rows)}", file=sys.stderr)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
