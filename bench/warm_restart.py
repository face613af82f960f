"""Warm restarts alone: `spot-agent run` on a dir that already holds its checkpoint.

    python -m bench.warm_restart [--files 2000,20000] [--kib 16] [--big-mib 4096]
                                 [--reps 3] [--code DIR]

For each data set (N x KiB small files, one big file): generate it (mtimes an hour old, as
a job's files written a while ago), upload it with `python -m agent run -- true`, then
restart the agent on the same dir --reps times and measure, from process start until the
job runs: seconds, the S3 requests by kind (SeaweedFS's own counters, bench.s3counts) and
the restore's log fields (files kept on the local index's word, bytes read to check).
``--code DIR`` runs the agent from another checkout (PYTHONPATH), to compare with main.
A focused companion of the warm-restart rows of ``bench/run --only scale``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .agentruns import _events, _timestamp, agent_env
from .main import s3_env
from .s3counts import start_counted_seaweedfs, total
from .scale import AGENT, WAIT_JOB, age_files, make_big, make_small
from .tracked import Tracked


def _warm(env: dict[str, str], work: Path, counter: Any) -> dict[str, Any]:
    started, go = work / "job-started", work / "job-go"
    started.unlink(missing_ok=True)
    go.unlink(missing_ok=True)
    before = counter.snapshot()
    argv = [*AGENT, "run", "--", *WAIT_JOB, str(started), str(go)]
    wall = time.time()
    proc = Tracked(argv, env, cwd=work, output=work / "agent.out")
    try:
        seconds = proc.poll_until(started.exists, timeout=900)
        requests = counter.since(before)
    finally:
        go.touch()
    run = proc.wait()
    events = _events(run.output)
    restored = events.get("restore.done", {})
    marks = ("agent.start", "attempt.claimed", "restore.done", "child.started")
    return {
        "events_at": {e: round(_timestamp(events[e]) - wall, 3) for e in marks if e in events},
        "seconds": round(seconds, 3),
        "requests": total(requests),
        "requests_by_kind": requests,
        "restore": {
            k: restored.get(k)
            for k in ("files_already_present", "files_indexed", "bytes_hashed", "seconds")
        },
    }


def dataset(
    name: str, make: Any, reps: int, env0: dict[str, str], work: Path, s3: Any, counter: Any
) -> dict[str, Any]:
    data = work / name
    make(data)
    age_files(data)
    bucket = f"warm-{name.lower()}"
    s3.create_bucket(Bucket=bucket)
    home = work / f"home-{name}"
    home.mkdir()
    env = agent_env(
        env0,
        home,
        SPOT_AGENT_CHECKPOINT_URI=f"s3://{bucket}/spot",
        SPOT_AGENT_CHECKPOINT_DIR=str(data),
        SPOT_AGENT_JOB_ID="warm",
    )
    env["PYTHONPATH"] = env0.get("WARM_CODE", env["PYTHONPATH"])
    before = counter.snapshot()
    upload = Tracked([*AGENT, "run", "--", "true"], env, cwd=work, output=work / "up.out").wait()
    runs = [_warm(env, work, counter) for _ in range(reps)]
    shutil.rmtree(data, ignore_errors=True)
    return {
        "data": name,
        "upload_seconds": round(upload.seconds, 2),
        "upload_requests": total(counter.since(before)),
        "warm_median_seconds": statistics.median(r["seconds"] for r in runs),
        "warm_median_requests": statistics.median(r["requests"] or 0 for r in runs),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", default="2000,20000", help="small-file counts, comma-separated")
    p.add_argument("--kib", type=int, default=16)
    p.add_argument("--big-mib", type=int, default=4096, help="0: no big file")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--code", type=Path, help="run the agent from this checkout instead")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="spot-agent-warm-"))
    server, counter = start_counted_seaweedfs(
        work / "seaweedfs", volume_size_limit_mb=256, volume_max=200
    )
    try:
        env0 = s3_env(server, work)
        if a.code is not None:
            env0["WARM_CODE"] = str(a.code.resolve())
        os.environ.update(env0)
        import boto3

        s3 = boto3.client("s3")
        sets: list[tuple[str, Any]] = [
            (f"{n}x{a.kib}KiB", lambda d, n=int(n): make_small(d, n, a.kib))
            for n in a.files.split(",")
            if n
        ]
        if a.big_mib:
            sets.append((f"1x{a.big_mib}MiB", lambda d: make_big(d, a.big_mib)))
        for name, make in sets:
            row = dataset(name, make, a.reps, env0, work, s3, counter)
            print(json.dumps(row), flush=True)
            print(
                f"{name}: warm restart {row['warm_median_seconds']:.3f} s, "
                f"{row['warm_median_requests']} requests (median of {a.reps}); "
                f"upload {row['upload_seconds']} s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
