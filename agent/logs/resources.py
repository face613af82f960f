"""Periodic resource samples of the job's process tree (``child.resources`` events).

CPU is the tree's CPU time used since the previous sample over the wall time between them
(100 = one core busy), so a job that forks workers is seen whole. Processes that ended
between two samples take their CPU time with them; the figure is a floor, not an audit.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import logs

if TYPE_CHECKING:
    import psutil

log = logs.get_logger()


def sample_tree(procs: list[psutil.Process]) -> dict[str, float]:
    """Totals over ``procs``: cpu_seconds, rss_bytes, open_files, threads, processes."""
    import psutil  # in the sampler's thread, once the job runs: not before it starts

    cpu = 0.0
    rss = files = threads = alive = 0
    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            with p.oneshot():
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue  # exited, not yet reaped: no memory, no files, nothing to count
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
                threads += p.num_threads()
                alive += 1
            with contextlib.suppress(psutil.Error, OSError):
                files += len(p.open_files())
    return {
        "cpu_seconds": cpu,
        "rss_bytes": rss,
        "open_files": files,
        "threads": threads,
        "processes": alive,
    }


def run_sampler(
    tree: Callable[[], list[psutil.Process]], interval: float, stop: threading.Event
) -> None:
    """Log a sample every ``interval`` seconds until ``stop`` is set."""
    last_cpu, last_t = 0.0, time.monotonic()
    while not stop.wait(interval):
        try:
            s = sample_tree(tree())
        except Exception as exc:  # a sampler must never take the job down
            log.warning("child.resources_failed", error=repr(exc))
            continue
        now = time.monotonic()
        cpu_percent = 100.0 * max(s["cpu_seconds"] - last_cpu, 0.0) / max(now - last_t, 1e-6)
        last_cpu, last_t = s["cpu_seconds"], now
        if not s["processes"]:
            continue
        log.info(
            "child.resources",
            cpu_percent=round(cpu_percent, 1),
            cpu_seconds=round(s["cpu_seconds"], 2),
            rss_bytes=int(s["rss_bytes"]),
            open_files=int(s["open_files"]),
            threads=int(s["threads"]),
            processes=int(s["processes"]),
        )


def start_sampler(
    tree: Callable[[], list[psutil.Process]], interval: float, stop: threading.Event
) -> None:
    if interval <= 0:
        return
    threading.Thread(
        target=run_sampler, args=(tree, interval, stop), name="resources", daemon=True
    ).start()
