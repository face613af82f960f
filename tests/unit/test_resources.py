"""Resource samples of the job's tree: a process that exited and is not reaped yet (a
zombie) has no memory and no files, and is not counted as a live one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from agent.logs.resources import sample_tree


def test_a_zombie_is_not_counted() -> None:
    kid = subprocess.Popen([sys.executable, "-c", "pass"])
    zombie = psutil.Process(kid.pid)
    try:
        deadline = time.monotonic() + 30
        while zombie.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert zombie.status() == psutil.STATUS_ZOMBIE
        me = psutil.Process(os.getpid())
        sample = sample_tree([me, zombie])
        assert sample["processes"] == 1 and sample["rss_bytes"] > 0
    finally:
        kid.wait()
