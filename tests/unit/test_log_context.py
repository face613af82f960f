"""The bound context of the logs: bound from any thread while others log."""

from __future__ import annotations

import io
import json
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog

from agent import logs


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    logs.reset_static()
    structlog.configure(**saved)


def test_binding_while_other_threads_log_never_breaks_an_event() -> None:
    """A stress run once hit 'dictionary changed size during iteration' in add_static."""
    out = io.StringIO()
    logs.configure(out, json=True)
    errors: list[BaseException] = []
    stop = threading.Event()

    def bind() -> None:
        i = 0
        while not stop.is_set():
            logs.bind_static(**{f"field_{i % 50}": i})  # new keys: the dict grows
            i += 1
            if i % 50 == 0:
                logs.reset_static()
                logs.bind_static(job_id="j", attempt=1)

    def log() -> None:
        logger = logs.get_logger()
        try:
            for n in range(1000):
                logger.info("stress.tick", n=n)
        except BaseException as exc:  # what the job would see: an agent thread dying
            errors.append(exc)

    saved_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # switch threads often: more interleavings per second
    binders = [threading.Thread(target=bind) for _ in range(2)]
    loggers = [threading.Thread(target=log) for _ in range(4)]
    try:
        for t in binders + loggers:
            t.start()
        for t in loggers:
            t.join(120)
    finally:
        stop.set()
        for t in binders:
            t.join(30)
        sys.setswitchinterval(saved_interval)
    assert errors == []
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 * 1000
    assert all(json.loads(line)["event"] == "stress.tick" for line in lines)
