"""spot-agent's sync and restore in a process of their own, driven over stdin/stdout.

The benchmark runs spot-agent's transfer code in a subprocess so that its CPU time is
measured the same way as the command-line tools' (the rusage of one process), and so that
one process can keep its state (the hash cache, the set of blobs it knows are stored)
between a full and an incremental sync, as the long-running agent does.

    python -m bench.spotproc --bucket B --prefix P --job J --dir D [--sse none]

reads one command a line (``sync``, ``restore``, ``profile-sync FILE``,
``profile-restore FILE``, ``quit``) and answers each with one JSON line: what it did, its
wall seconds and the process's cumulative CPU seconds (user + system, all threads, from
the start of the interpreter).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from checkpoint.engine.checkpointer import Checkpointer  # noqa: E402
from checkpoint.engine.format.jobstore import JobStore  # noqa: E402
from checkpoint.engine.store.s3 import S3Store  # noqa: E402


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bucket", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--sse", default="none")
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    store = S3Store(a.bucket, a.prefix, sse=a.sse, concurrency=a.concurrency)
    ckpt = Checkpointer(JobStore(store, a.job), a.dir)
    answer({"op": "ready", "cpu": cpu_seconds()})
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        op, args = words[0], words[1:]
        if op == "quit":
            break
        answer(run(ckpt, op, args))
    ckpt.close()
    store.close()
    return 0


def run(ckpt: Checkpointer, op: str, args: list[str]) -> dict[str, Any]:
    profiler = None
    if op.startswith("profile-"):
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002, async_mode="disabled")
        profiler.start()
        op = op.removeprefix("profile-")
    started = time.monotonic()
    out: dict[str, Any] = {"op": op}
    if op == "sync":
        r = ckpt.sync_once("bench")
        out.update(
            bytes_uploaded=r.bytes_uploaded,
            bytes_total=r.bytes_total,
            bytes_hashed=r.bytes_hashed,
            chunks_uploaded=r.chunks_uploaded,
        )
    elif op == "restore":
        rr = ckpt.restore()
        out.update(bytes_downloaded=rr.bytes_downloaded, files=rr.files_written)
    else:
        out["error"] = f"unknown command {op!r}"
    out.update(seconds=time.monotonic() - started, cpu=cpu_seconds())
    if profiler is not None:
        profiler.stop()
        Path(args[0]).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        Path(args[0]).with_suffix(".html").write_text(profiler.output_html())
    return out


def answer(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
