"""S3 requests per operation kind, counted by the server itself.

SeaweedFS counts every S3 request it serves in a Prometheus counter,
``SeaweedFS_s3_request_total{type,code,bucket}``, ``type`` being the operation kind (PUT,
GET, HEAD, LIST, POST for multipart create/complete, DELETE, ...). Reading it before and
after one tool's run gives that run's requests, exactly, with nothing in the data path.

Why not a counting proxy in front of the server (as tests/faultproxy.py is): a Python proxy
would carry every byte through one more process on the 2 shared cores, capping the line
rate and adding CPU to the very figures (restore vs s5cmd) the benchmark compares.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests import servers

_SAMPLE = re.compile(r"^SeaweedFS_s3_request_total\{([^}]*)\}\s+(\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


class RequestCounter:
    def __init__(self, metrics_url: str) -> None:
        self.url = metrics_url

    def snapshot(self) -> Counter[str]:
        """Requests served so far, by kind (every bucket and status code)."""
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            text = resp.read().decode()
        counts: Counter[str] = Counter()
        for labels, value in _SAMPLE.findall(text):
            kind = dict(_LABEL.findall(labels)).get("type", "?")
            counts[kind] += int(float(value))
        return counts

    def since(self, before: Counter[str]) -> dict[str, int]:
        """Requests since ``before``. The gateway counts a request after answering it, so
        give the last answers of a process that just exited a moment to be counted."""
        time.sleep(0.05)
        after = self.snapshot()
        return {k: after[k] - before[k] for k in sorted(after) if after[k] - before[k] > 0}


def total(kinds: dict[str, int] | None) -> int | None:
    return None if kinds is None else sum(kinds.values())


def start_counted_seaweedfs(
    tmpdir: Path, **kwargs: Any
) -> tuple[servers.SeaweedS3, RequestCounter]:
    """tests.servers.start_seaweedfs with its metrics listener on a free 127.0.0.1 port.

    start_seaweedfs takes no extra arguments, and tests/ is not the benchmark's to change,
    so its spawn function is wrapped for this one call.
    """
    for attempt in range(3):
        try:
            return _start(tmpdir / f"try-{attempt}", **kwargs)
        except servers.ServerStartError:
            # A port picked free was taken before weed bound it (the machine is shared).
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start(tmpdir: Path, **kwargs: Any) -> tuple[servers.SeaweedS3, RequestCounter]:
    port = servers.free_port()
    spawn = servers._spawn

    def with_metrics(
        name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> Any:
        return spawn(name, [*argv, f"-metricsPort={port}", "-metricsIp=127.0.0.1"], workdir, env)

    servers._spawn = with_metrics
    try:
        server = servers.start_seaweedfs(tmpdir, **kwargs)
    finally:
        servers._spawn = spawn
    return server, RequestCounter(f"http://127.0.0.1:{port}/metrics")
