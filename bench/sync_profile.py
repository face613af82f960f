"""Where a sync's memory goes, per file: tracemalloc at the commit (issue 23).

python -m bench.sync_profile --files 30000 [--size 64] [--warm] [--top 15] CODE_DIR

A fresh Python process imports ``checkpoint`` from CODE_DIR, generates ``--files`` files
(1,000 to a directory, mtimes an hour old) and syncs them into an empty local store, with
tracemalloc tracing from the start of the measured sync. Just before that sync commits,
it prints what is allocated, in bytes a file, by line: the state the sync holds for the
whole tree at its commit. ``--warm``: the measured sync is the first one of a second
Checkpointer that restored the first sync's checkpoint into the same dir (as a warm
restart does), with one file changed so that it commits. Not a figure of peak RSS (see
``bench.sync_memory`` and ``bench.warm_memory``): tracemalloc counts Python's objects, not
the allocator's pages or the chunk bytes in flight, and it slows the sync severalfold.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import gc, os, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from checkpoint.engine.store.base import LocalStore
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
import checkpoint.engine.save.sync as sync
work, n, size = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
warm, top = sys.argv[5] == "1", int(sys.argv[6])
data = work / "data"
old = time.time() - 3600
for i in range(n):
    d = data / f"d{i // 1000:04d}"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"f{i:07d}").write_bytes(os.urandom(size))
    os.utime(d / f"f{i:07d}", (old, old))
snapshots = []
commit = sync.commit
def measured(*args, **kwargs):
    if tracemalloc.is_tracing():
        gc.collect()
        snapshots.append(tracemalloc.take_snapshot())
    return commit(*args, **kwargs)
sync.commit = measured
job = JobStore(LocalStore(work / "store"), "bench")
ckpt = Checkpointer(job, data, progress=lambda e, f: None)
if warm:
    ckpt.sync_once("first")
    ckpt.close()
    ckpt = Checkpointer(job, data, progress=lambda e, f: None, attempt=2)
    tracemalloc.start(1)
    ckpt.restore()
    (data / "d0000" / "f0000000").write_bytes(b"changed")
else:
    tracemalloc.start(1)
ckpt.sync_once("measured")
ckpt.close()
stats = snapshots[-1].statistics("lineno")
print(f"{sum(s.size for s in stats) / n:.0f} B a file held at the commit, {n:,} files; by line:")
for s in stats[:top]:
    frame = s.traceback[0]
    where = frame.filename.split("/checkpoint/")[-1]
    print(f"{s.size / n:8.1f} B a file  {s.count:9,d} blocks  {where}:{frame.lineno}")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=30000)
    ap.add_argument("--size", type=int, default=64, help="bytes per file")
    ap.add_argument("--warm", action="store_true", help="measure the sync after a restore")
    ap.add_argument("--top", type=int, default=15, help="lines shown")
    ap.add_argument("code", type=Path, help="a spot-agent checkout")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sync-profile-") as work:
        args = [str(a.code.resolve()), work, str(a.files), str(a.size), str(int(a.warm))]
        return subprocess.run([sys.executable, "-c", CHILD, *args, str(a.top)]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
