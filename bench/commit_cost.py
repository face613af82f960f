"""What a commit of one changed file costs in a big dir, one code tree against another.

    python -m bench.commit_cost --files 300000 [--size 1024] [--reps 3] CODE_DIR [CODE_DIR ...]

Issue 23 asks that cost grow with change, not with size. This measures the final sync of a
warm agent, as after a notice: ``--files`` files of ``--size`` random bytes (1,000 to a
directory, mtimes an hour old) are synced once into an empty local store (no server: the
figures are the engine's own). Then for each repetition and each tree, in rotated order, a
fresh Python process imports ``checkpoint`` from that tree, restores into the same dir (a
warm restart: the local index vouches for every file), syncs with nothing changed (no
commit), rewrites one file and syncs again (a commit). Prints one row per tree, medians:
the seconds of both syncs, and of the second the part spent writing the local index.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from .scale import age_files
from .sync_memory import make_files, measured

CHILD = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from checkpoint.engine.store.base import LocalStore
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
import checkpoint.engine.save.sync as sync
data, store, attempt = Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
index_seconds = []
write_index = sync.write_index
def timed(*args, **kwargs):
    started = time.monotonic()
    try:
        return write_index(*args, **kwargs)
    finally:
        index_seconds.append(time.monotonic() - started)
sync.write_index = timed
ckpt = Checkpointer(JobStore(LocalStore(store), "bench"), data, attempt=attempt,
                    progress=lambda e, f: None)
if attempt == 1:
    print(json.dumps({"files": ckpt.sync_once("first").files}))
    sys.exit()
restored = ckpt.restore()
started = time.monotonic()
same = ckpt.sync_once("unchanged")
unchanged = time.monotonic() - started
changed_file = data / "d0000" / "f0000000"
changed_file.write_bytes(os.urandom(1024))
hour_ago = time.time_ns() - 3600 * 10**9  # not racy: the next tree's restore vouches for it
os.utime(changed_file, ns=(hour_ago, hour_ago))
del index_seconds[:]
started = time.monotonic()
one = ckpt.sync_once("one changed")
changed = time.monotonic() - started
print(json.dumps({"indexed": restored.files_indexed, "unchanged_committed": same.sequence,
                  "committed": one.sequence, "unchanged_s": unchanged, "changed_s": changed,
                  "index_s": sum(index_seconds)}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=1024, help="bytes per file")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("code", type=Path, nargs="+", help="spot-agent checkouts")
    args = ap.parse_args()
    trees = [c.resolve() for c in args.code]
    with tempfile.TemporaryDirectory(prefix="commit-cost-") as tmp:
        work = Path(tmp)
        data, store = work / "data", work / "store"
        make_files(data, args.files, args.size)
        age_files(data)
        first = measured(CHILD, [str(trees[0]), str(data), str(store), "1"], work)
        if isinstance(first, str):
            sys.exit(f"the first sync failed: {first}")
        rows: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
        attempt = 1
        for rep in range(args.reps):
            for tree in trees[rep % len(trees) :] + trees[: rep % len(trees)]:
                attempt += 1
                row = measured(CHILD, [str(tree), str(data), str(store), str(attempt)], work)
                if isinstance(row, str):
                    sys.exit(f"{tree}: {row}")
                if row["indexed"] != args.files or row["unchanged_committed"] is not None:
                    sys.exit(f"{tree}: not a warm restart of an unchanged dir: {row}")
                print(f"  {tree.name}: {json.dumps(row)}", flush=True)
                rows[tree].append(row)
        print(f"\n{args.files:,} x {args.size} B, medians of {args.reps}:")
        print(f"{'code':<24} {'unchanged sync s':>17} {'one changed s':>14} {'index write s':>14}")
        for tree, runs in rows.items():
            med = {
                k: statistics.median(r[k] for r in runs)
                for k in ("unchanged_s", "changed_s", "index_s")
            }
            print(
                f"{tree.name:<24} {med['unchanged_s']:>17.2f} {med['changed_s']:>14.2f} "
                f"{med['index_s']:>14.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
