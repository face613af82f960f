"""The job's process tree: every process descended from the job or left in its process
group, and ending them (SIGKILL at once, or SIGTERM then SIGKILL for what the job left
behind when it exited).

psutil (about 20 ms of imports) is loaded by the first call that walks a tree, once the
job runs; the agent's own children before the job (:func:`own_children`) are read from
``/proc`` without it, so that nothing of it is imported before the job starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil


def own_children() -> set[int]:
    """The pids of this process's children now: each thread's ``children`` file in
    ``/proc`` (Linux 3.5+, CONFIG_PROC_CHILDREN), psutil's scan of every process where the
    kernel has no such file."""
    tasks = "/proc/self/task"
    if not os.path.exists(f"{tasks}/{os.getpid()}/children"):
        import psutil

        return {p.pid for p in psutil.Process().children()}
    pids: set[int] = set()
    for tid in os.listdir(tasks):
        try:
            with open(f"{tasks}/{tid}/children") as f:
                pids.update(int(pid) for pid in f.read().split())
        except FileNotFoundError:
            continue  # that thread has ended since the listing
    return pids


def job_tree(pid: int, *, reaper: bool, foreign: Collection[int] = ()) -> list[psutil.Process]:
    """The job ``pid`` and every process descended from it or left in its process group.
    As a ``reaper`` (subreaper or PID 1), also our children but the ``foreign`` ones (those
    we had before the job) and their descendants: the job's orphans, re-parented to us."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        procs[root.pid] = root
        for p in root.children(recursive=True):
            procs[p.pid] = p
    # As subreaper or PID 1, every orphan of the job is re-parented to us, even one that
    # left its process group (setsid, a daemon): our children, minus the ones we had
    # before the job, are the job's.
    if reaper:
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process().children():
                if p.pid in foreign:
                    continue
                procs[p.pid] = p
                with contextlib.suppress(psutil.Error):
                    procs.update((c.pid, c) for c in p.children(recursive=True))
    # Orphans that stayed in the job's process group, wherever they were re-parented.
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if p.pid not in procs and os.getpgid(p.pid) == pid:
                procs[p.pid] = p
    return list(procs.values())


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL each of ``procs`` that still exists."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def end_all(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM ``procs``, then SIGKILL those still alive after ``grace`` seconds (as a
    container's stop would), and wait for them."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=grace)
    kill_all(alive)
    psutil.wait_procs(alive, timeout=grace)
