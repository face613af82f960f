"""Peak RSS of a warm restart, one code tree against another (issue 23).

    python -m bench.warm_memory --files 100000 --size 1024 [--reps 3] CODE_DIR [CODE_DIR ...]

The companion of ``bench.sync_memory`` for the other direction. For each repetition and
each tree, in rotated order: a copy of the generated dir (``--files`` files of ``--size``
random bytes, 1,000 to a directory, mtimes an hour old so that none is racy) is synced
into an empty local store by one process (attempt 1), then a second, fresh process
(attempt 2) restores into that same dir, as a retry on the same host does, and runs the
first sync after it (nothing changed). No server: the figures are the engine's own.
Prints one row per tree, medians: the peak RSS (VmHWM) of each process, the files the
local index vouched for, and the warm process's wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from .scale import age_files
from .sync_memory import make_files, measured

CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from checkpoint.engine.store.base import LocalStore
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
data, store, step = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
ckpt = Checkpointer(JobStore(LocalStore(store), "bench"), data,
                    attempt=1 if step == "sync" else 2, progress=lambda e, f: None)
if step == "sync":
    out = {"files": ckpt.sync_once("bench").files}
else:
    restored = ckpt.restore()
    after = ckpt.sync_once("after")
    out = {"indexed": restored.files_indexed, "hashed": restored.bytes_hashed,
           "committed": after.sequence}
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({**out, "hwm_kib": hwm}))
"""


def run_step(code: Path, data: Path, store: Path, step: str) -> dict[str, float]:
    row = measured(CHILD, [str(code), str(data), str(store), step], data.parent)
    if isinstance(row, str):
        sys.exit(f"{code} {step}: {row}")
    return row


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.warm_memory", description=__doc__)
    p.add_argument("code", nargs="+", type=Path, help="spot-agent checkouts to compare")
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--size", type=int, default=1024, help="bytes per file")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spot-agent-warmmem-"))
    try:
        source = work / "source"
        make_files(source, a.files, a.size)
        age_files(source)
        runs: dict[Path, list[tuple[dict[str, float], dict[str, float]]]] = {c: [] for c in a.code}
        for r in range(a.reps):
            order = a.code[r % len(a.code) :] + a.code[: r % len(a.code)]
            for code in order:
                data, store = work / "data", work / "store"
                shutil.copytree(source, data)  # copy2: the old mtimes stay
                synced = run_step(code.resolve(), data, store, "sync")
                warm = run_step(code.resolve(), data, store, "warm")
                runs[code].append((synced, warm))
                print(f"rep {r + 1} {code}: {synced} {warm}", file=sys.stderr)
                shutil.rmtree(data)
                shutil.rmtree(store)
        print(f"warm restart of {a.files:,} x {a.size} B, local store, medians of {a.reps}:")
        print(
            f"{'code':<28} {'sync MiB':>8} {'warm MiB':>8} {'indexed':>8} "
            f"{'warm wall s':>11} {'warm CPU s':>10}"
        )
        for code, results in runs.items():
            med = {
                "sync": statistics.median(s["hwm_kib"] for s, _ in results) / 1024,
                "warm": statistics.median(w["hwm_kib"] for _, w in results) / 1024,
                "indexed": statistics.median(w["indexed"] for _, w in results),
                "wall": statistics.median(w["wall"] for _, w in results),
                "cpu": statistics.median(w["cpu"] for _, w in results),
            }
            print(
                f"{code!s:<28} {med['sync']:>8.0f} {med['warm']:>8.0f} {med['indexed']:>8.0f} "
                f"{med['wall']:>11.1f} {med['cpu']:>10.1f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
