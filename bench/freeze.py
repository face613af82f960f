"""The freeze: time under the job's save-point lock, and the job's slowdown from save points.

    python -m bench.freeze [--big-gib 4] [--files 10000] [--generations 200]

1. Time under the lock (``Frozen.lock_seconds``) for 10,000 small files and for one big
   file written for real (not sparse): the first freeze (every file linked), the next one
   with nothing changed, and one after the job replaced 10% of the files.
2. A job that saves four files per generation (64 KiB each, each fsynced) as fast as it
   can: its own wall time bare (no agent), and under the agent (``--sync-interval 1``)
   with save points and periodic syncs only, with a ``request_sync()`` after every save
   (each waits for the freeze, so for the sync in flight), and with plain atomic writes.

Local disk and a local ``file://`` store; nothing talks to the network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from checkpoint.engine.save.freeze import Freezer  # noqa: E402

JOB = """
import os, sys, time
import checkpoint
mode, n = sys.argv[1], int(sys.argv[2])
blob = os.urandom(64 << 10)
t0 = time.perf_counter()
for g in range(n):
    ctx = checkpoint.saving() if mode != "plain" else open(os.devnull)
    with ctx:
        for name in ("model.bin", "optim.bin", "rng.bin", "meta.bin"):
            checkpoint.save_bytes(name, str(g).encode() + blob)
    if mode != "periodic":
        checkpoint.request_sync()
print(f"job_seconds {time.perf_counter() - t0:.4f}", flush=True)
"""


def lock_times(root: Path, label: str, change: list[Path]) -> list[tuple[str, float]]:
    fz = Freezer(root)
    fz.reset()

    def freeze() -> float:  # each freeze is committed before the next, as in the agent
        seconds = fz.freeze(10).lock_seconds
        fz.committed()
        return seconds

    rows = [(f"{label}: first freeze", freeze())]
    same = [freeze() for _ in range(5)]
    rows.append((f"{label}: nothing changed (median of 5)", statistics.median(same)))
    for path in change:  # the job replaces these files (temp file and rename)
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(b"changed")
        os.replace(tmp, path)
    rows.append((f"{label}: {len(change)} file(s) just replaced", freeze()))
    fz.pending = fz.freeze(10)  # a freeze whose sync failed is kept as the last consistent
    for path in change:  # one: the next freeze links all under the lock, not before it
        os.replace(path, path)
        path.with_name(path.name + ".new").write_bytes(b"again")
        os.replace(path.with_name(path.name + ".new"), path)
    rows.append((f"{label}: same, after a failed sync", freeze()))
    fz.reset()
    return rows


def many_files(tmp: Path, count: int) -> list[tuple[str, float]]:
    root = tmp / "many"
    for i in range(count):
        d = root / f"d{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(os.urandom(512))
    files = sorted(p for p in root.rglob("f*"))
    return lock_times(root, f"{count:,} files of 512 B", files[::10])


def one_big_file(tmp: Path, gib: float) -> list[tuple[str, float]]:
    root = tmp / "big"
    root.mkdir()
    block = os.urandom(64 << 20)
    with open(root / "weights.bin", "wb") as fh:  # real blocks on disk, not a sparse file
        for _ in range(int(gib * 16)):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return lock_times(root, f"one {gib:g} GiB file", [root / "weights.bin"])


def job_seconds(tmp: Path, mode: str, generations: int, agent: bool) -> float:
    work = tmp / f"job-{mode}-{agent}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOT_AGENT_", "CHECKPOINT"))}
    env.update(PYTHONPATH=str(REPO), CHECKPOINT_DIR=str(work))
    cmd = [sys.executable, "-c", JOB, mode, str(generations)]
    if agent:
        env.update(
            SPOT_AGENT_CHECKPOINT_URI=(tmp / f"store-{mode}").as_uri(),
            SPOT_AGENT_IMDS="off",
            SPOT_AGENT_SYNC_INTERVAL="1",
            XDG_STATE_HOME=str(tmp / "state"),
        )
        cmd = [sys.executable, "-m", "agent", "run", "--job-id", f"b-{mode}",
               "--checkpoint-dir", str(work), "--", *cmd]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("job_seconds "))
    return float(line.split()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--big-gib", type=float, default=4.0)
    ap.add_argument("--generations", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-freeze-") as raw:
        tmp = Path(raw)
        print("| time under the save-point lock | ms |\n|---|---:|")
        for label, seconds in many_files(tmp, args.files) + one_big_file(tmp, args.big_gib):
            print(f"| {label} | {seconds * 1000:.1f} |", flush=True)
        print(f"\n| job: {args.generations} saves of 4 x 64 KiB | job seconds | vs bare |")
        print("|---|---:|---:|")
        bare = job_seconds(tmp, "savepoints", args.generations, agent=False)
        print(f"| bare (no agent), save points | {bare:.2f} | 1.00x |", flush=True)
        for mode, label in (
            ("periodic", "save points, periodic syncs only (every 1 s)"),
            ("savepoints", "save points, request_sync() after each"),
            ("plain", "plain atomic writes, request_sync() after each"),
        ):
            s = job_seconds(tmp, mode, args.generations, agent=True)
            print(f"| under the agent, {label} | {s:.2f} | {s / bare:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
