"""Notice -> committed when one shard of a training dir changed since the last sync (issue 23).

    python -m bench.final_sync [--shards 4] [--shard-mib 128] [--reps 3] CODE_DIR [CODE_DIR ...]

Each CODE_DIR is a checkout of spot-agent ("before" and "after"). For each repetition and
each tree, in rotated order: a fresh copy of the training dir (``--shards`` files of
``--shard-mib`` MiB) and an empty local store; ``python -m agent run`` from that tree runs a
job that asks for a sync (everything is uploaded), rewrites one shard whole, says so and
waits; the benchmark then sends SIGTERM and times SIGTERM -> ``sync.committed`` of the
final sync, and reads its ``bytes_hashed``. The local store (``file://``) keeps a server
out of the figure: what differs is what the final sync reads. Medians per tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from .agentruns import event_list
from .scale import write_random

MiB = 1 << 20
JOB = """
import os, time
import checkpoint
d = checkpoint.directory()
checkpoint.handle_stop()
assert checkpoint.request_sync(wait=600)
while (checkpoint.last_sync() or {}).get("sequence") != 1:  # the first commit is done
    time.sleep(0.05)
with open(d / "shard-0.bin", "r+b") as fh:  # the next save rewrites one shard
    for _ in range(os.path.getsize(d / "shard-0.bin") // (8 << 20)):
        fh.write(os.urandom(8 << 20))
print("shard", "rewritten", flush=True)
while not checkpoint.interrupted():
    time.sleep(0.01)
"""


def make_dir(root: Path, shards: int, shard_mib: int) -> None:
    root.mkdir(parents=True)
    for i in range(shards):
        write_random(root / f"shard-{i}.bin", shard_mib)
        old = time.time() - 3600  # saved an hour ago: the stat cache may vouch for them
        os.utime(root / f"shard-{i}.bin", (old, old))


def run_once(code: Path, source: Path, work: Path) -> dict[str, float]:
    run = Path(tempfile.mkdtemp(dir=work))
    ckdir = run / "dir"
    shutil.copytree(source, ckdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_AGENT_")}
    env.update(
        PYTHONPATH=str(code),
        PYTHONUNBUFFERED="1",
        XDG_STATE_HOME=str(run / "state"),
        SPOT_AGENT_IMDS="off",
        SPOT_AGENT_SSE="none",
    )
    args = ["--checkpoint-uri", f"file://{run / 'store'}", "--job-id", "bench"]
    args += ["--checkpoint-dir", str(ckdir), "--sync-interval", "0", "--grace-period", "120"]
    out = run / "agent.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", *args, "--", sys.executable, "-c", JOB],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=run,
        )
    try:
        deadline = time.monotonic() + 600
        while "shard rewritten" not in out.read_text().splitlines():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the job did not get to its second save:\n{out.read_text()}")
            time.sleep(0.05)
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(600)
    finally:
        if proc.poll() is None:
            proc.kill()
    final = [
        e
        for e in event_list(out.read_text())
        if e.get("event") == "sync.committed" and e.get("reason") == "interruption"
    ]
    if not final:
        raise SystemExit(f"no final commit:\n{out.read_text()[-3000:]}")
    at = datetime.fromisoformat(str(final[-1]["timestamp"]).replace("Z", "+00:00")).timestamp()
    shutil.rmtree(run)
    return {"seconds": at - sent, "bytes_hashed": float(final[-1]["bytes_hashed"])}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.final_sync", description=__doc__)
    p.add_argument("code", nargs="+", type=Path, help="spot-agent checkouts to compare")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--shard-mib", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spot-agent-finalsync-"))
    try:
        source = work / "training"
        make_dir(source, a.shards, a.shard_mib)
        runs: dict[Path, list[dict[str, float]]] = {c: [] for c in a.code}
        for r in range(a.reps):
            order = a.code[r % len(a.code) :] + a.code[: r % len(a.code)]
            for code in order:
                runs[code].append(run_once(code.resolve(), source, work))
                print(f"rep {r + 1} {code}: {runs[code][-1]}", file=sys.stderr)
        total = a.shards * a.shard_mib
        print(
            f"SIGTERM -> final commit, {a.shards} x {a.shard_mib} MiB, one shard rewritten, "
            f"local store, medians of {a.reps}:"
        )
        print(f"{'code':<28} {'seconds':>8} {'MiB read':>9} {'of':>6}")
        for code, rows in runs.items():
            secs = statistics.median(row["seconds"] for row in rows)
            read = statistics.median(row["bytes_hashed"] for row in rows) / MiB
            print(f"{code!s:<28} {secs:>8.2f} {read:>9.0f} {total:>6}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
