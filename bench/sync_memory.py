"""Peak RSS of one full sync of many small files, one code tree against another (issue 23).

    python -m bench.sync_memory --files 100000 --size 1024 [--reps 3] CODE_DIR [CODE_DIR ...]

Each CODE_DIR is a checkout of spot-agent (``/path/to/main`` for "before", this tree for
"after"). For each repetition and each tree, in rotated order, a fresh Python process
imports ``checkpoint`` from that tree and runs one ``Checkpointer.sync_once`` of the same
generated dir (``--files`` files of ``--size`` random bytes, 1,000 to a directory) into an
empty local store: no server, so the figures are the sync's own memory and CPU, not a
client library's. Prints one row per tree: medians of peak RSS (VmHWM), wall and CPU
seconds, and the manifest bytes written.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from checkpoint.engine.store.base import LocalStore
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
store = LocalStore(Path(sys.argv[3]))
ckpt = Checkpointer(JobStore(store, "bench"), Path(sys.argv[2]), progress=lambda e, f: None)
started = time.monotonic()
try:
    result = ckpt.sync_once("bench")
except Exception as exc:  # the figures of a sync that was refused count too
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    sys.exit(f"failed after {time.monotonic() - started:.1f} s at {hwm // 1024} MiB: {exc}")
seconds = time.monotonic() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
manifest = sum(
    p.stat().st_size
    for sub in ("manifests", "pages")
    for p in (Path(sys.argv[3]) / "bench" / sub).rglob("*")
    if p.is_file()
)
print(json.dumps({"files": result.files, "seconds": seconds, "hwm_kib": hwm,
                  "manifest_bytes": manifest}))
"""


def make_files(root: Path, count: int, size: int) -> None:
    for i in range(count):
        d = root / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:07d}").write_bytes(os.urandom(size))


def measured(child: str, args: list[str], cwd: Path) -> dict[str, float] | str:
    """Run the script ``child`` in a fresh Python (the tree to import is its first
    argument, so PYTHONPATH is dropped): the JSON row of its last line of output with its
    wall and CPU seconds, or why it failed (its last line of error)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", child, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        return (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**row, "wall": wall, "cpu": cpu}


def run_once(code: Path, data: Path, work: Path) -> dict[str, float] | str:
    """The figures of one sync, or why it failed (its last line of error)."""
    store = Path(tempfile.mkdtemp(dir=work))
    try:
        return measured(CHILD, [str(code), str(data), str(store)], work)
    finally:
        shutil.rmtree(store)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sync_memory", description=__doc__)
    p.add_argument("code", nargs="+", type=Path, help="spot-agent checkouts to compare")
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--size", type=int, default=1024, help="bytes per file")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data", type=Path, help="use this dir instead of generating one")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spot-agent-syncmem-"))
    try:
        data = a.data
        if data is None:
            data = work / "data"
            make_files(data, a.files, a.size)
        runs: dict[Path, list[dict[str, float] | str]] = {c: [] for c in a.code}
        for r in range(a.reps):
            order = a.code[r % len(a.code) :] + a.code[: r % len(a.code)]
            for code in order:
                runs[code].append(run_once(code.resolve(), data, work))
                print(f"rep {r + 1} {code}: {runs[code][-1]}", file=sys.stderr)
        print(f"sync of {a.files:,} x {a.size} B, local store, medians of {a.reps}:")
        print(f"{'code':<28} {'peak RSS MiB':>12} {'wall s':>7} {'CPU s':>7} {'manifest':>10}")
        for code, results in runs.items():
            rows = [row for row in results if not isinstance(row, str)]
            if not rows:
                print(f"{code!s:<28} failed: {results[-1]}")
                continue
            med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
            print(
                f"{code!s:<28} {med['hwm_kib'] / 1024:>12.0f} {med['wall']:>7.1f} "
                f"{med['cpu']:>7.1f} {med['manifest_bytes'] / 1e6:>8.1f} MB"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
