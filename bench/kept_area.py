"""The agent's exit after a sync from a freeze, and the next agent's start and first sync,
for one or more checkouts side by side (issue 23: ``Freezer.close`` after periodic syncs).

    python -m bench.kept_area [--files 30000] [--reps 3] CODE_DIR [CODE_DIR ...]

Each repetition copies one data set (``--files`` files of 1 KiB in dirs of 100, aged an
hour) per checkout and, in a child process running that checkout's code, drives the
agent's own checkpoints (``agent.run.savepoints.SavePointCheckpoints`` on a local store)
through two attempts: attempt 1 restores nothing, syncs from a freeze ("periodic"), then,
its job gone, the final sync in place and the exit (``close``); attempt 2 restores (a warm
restart), syncs from a freeze, and exits the same way. Seconds of each step, medians per
checkout; checkouts rotate over the repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .exit_path import make_files

#: runs in the child, with the checkout's code first on sys.path
CHILD = """
import json, sys, time
from pathlib import Path
from agent.run.savepoints import SavePointCheckpoints
from checkpoint.engine.checkpointer import Checkpointer
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.base import LocalStore

src, store = Path(sys.argv[1]), Path(sys.argv[2])
out = {}

def timed(name, step):
    t = time.monotonic()
    value = step()
    out[name] = round(time.monotonic() - t, 3)
    return value

for attempt in (1, 2):
    job = JobStore(LocalStore(store), "bench")
    s = SavePointCheckpoints(Checkpointer(job, src, attempt=attempt), src, "never")
    timed(f"{attempt}.restore", s.restore)
    timed(f"{attempt}.sync_from_freeze", lambda: s.sync_once("periodic"))
    s.job_gone()
    timed(f"{attempt}.final_sync_in_place", lambda: s.sync_once("exit"))
    timed(f"{attempt}.exit_close", s.close)
print(json.dumps(out))
"""


def one(code: Path, data: Path, work: Path) -> dict[str, Any]:
    src, store = work / "src", work / "store"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(data, src)  # a copy of its own: the run links and unlinks its files
    env = dict(os.environ, PYTHONPATH=str(code))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(store)],
        cwd=work,  # not a checkout: ``-c`` puts the working dir first on sys.path
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    row: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    shutil.rmtree(work, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("code", nargs="+", type=Path, help="checkouts of spot-agent")
    p.add_argument("--files", type=int, default=30000)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="spot-agent-keptarea-"))
    try:
        data = tmp / "data"
        make_files(data, a.files)
        rows: dict[Path, list[dict[str, Any]]] = {c: [] for c in a.code}
        for rep in range(a.reps):
            order = a.code[rep % len(a.code) :] + a.code[: rep % len(a.code)]
            for code in order:
                rows[code].append(one(code.resolve(), data, tmp / "run"))
        for code, runs in rows.items():
            medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(json.dumps({"code": str(code), "files": a.files, "median_seconds": medians}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
