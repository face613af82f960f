"""The save-point lock's wait: bounded, and a long save is reported once."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from checkpoint.savelock import acquire


def test_a_long_save_is_reported_once_and_waited_for(tmp_path: Path) -> None:
    lock = tmp_path / "save.lock"
    lock.touch()
    saver = os.open(lock, os.O_RDWR)
    fcntl.flock(saver, fcntl.LOCK_EX)
    threading.Timer(0.3, os.close, args=(saver,)).start()  # the save ends after 0.3 s
    fd = os.open(lock, os.O_RDWR)
    try:
        waited: list[float] = []
        assert acquire(fd, 30, waited.append, long_save=0.05)
        assert len(waited) == 1 and waited[0] >= 0.05
    finally:
        os.close(fd)


def test_a_save_that_outlasts_the_wait_is_not_waited_for_longer(tmp_path: Path) -> None:
    lock = tmp_path / "save.lock"
    lock.touch()
    saver = os.open(lock, os.O_RDWR)
    fcntl.flock(saver, fcntl.LOCK_EX)
    fd = os.open(lock, os.O_RDWR)
    try:
        waited: list[float] = []
        assert not acquire(fd, 0.2, waited.append, long_save=0.05)
        assert len(waited) == 1  # reported while it waited, then gave up
    finally:
        os.close(fd)
        os.close(saver)
