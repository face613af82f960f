"""How soon a peer's interruption reaches the other nodes of a group, and what watching costs.

One node's agent announces a notice (``GroupRun.announce``: one create-only PUT under
``<job>/group/notices/``); another node's watcher (``PeerNotices``, one listing every 2 s,
the agent's setting) hands it over. Each trial posts at a random phase of the watcher's
poll and measures from the start of the PUT to the hand-over. The store is a local
SeaweedFS on 127.0.0.1 (started here, as the tests do), or a local directory store.

    python bench/group_notices.py [--count 20] [--store seaweedfs|dir] [--quiet 60]

Prints median, p90 and max delay, and the watcher's requests per hour.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import structlog  # noqa: E402

from agent.config import GroupSettings  # noqa: E402
from agent.group.notices import PeerNotices  # noqa: E402
from agent.group.run import GroupRun  # noqa: E402
from agent.notices import Notice, sigterm_notice  # noqa: E402
from checkpoint.engine.store.base import Store  # noqa: E402
from checkpoint.engine.store.uri import open_store  # noqa: E402


def open_bench_store(kind: str, tmp: Path) -> tuple[Store, object]:
    if kind == "dir":
        return open_store((tmp / "store").as_uri()), None
    from tests.servers import start_seaweedfs

    weed = start_seaweedfs(tmp / "weed")
    os.environ.update(
        AWS_ENDPOINT_URL_S3=weed.endpoint,
        AWS_ACCESS_KEY_ID=weed.access_key,
        AWS_SECRET_ACCESS_KEY=weed.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    import boto3

    boto3.client("s3", endpoint_url=weed.endpoint).create_bucket(Bucket="bench")
    return open_store("s3://bench/jobs"), weed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--store", choices=("seaweedfs", "dir"), default="seaweedfs")
    parser.add_argument("--quiet", type=float, default=60.0, help="seconds of quiet watching")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    with tempfile.TemporaryDirectory() as tmp:
        store, server = open_bench_store(args.store, Path(tmp))
        try:
            delays = []
            for trial in range(args.count):
                job = f"bench{trial}"
                sender = GroupRun(GroupSettings(2, 0), store, job)
                sender.attempt = 1
                watcher = PeerNotices(GroupRun(GroupSettings(2, 1), store, job).group, 1, None, 2.0)
                got = threading.Event()
                stop = threading.Event()

                def post(_: Notice, got: threading.Event = got) -> None:
                    got.set()

                thread = threading.Thread(target=watcher.run, args=(post, stop), daemon=True)
                thread.start()
                time.sleep(random.uniform(0.5, 2.5))
                sent = time.monotonic()
                sender.announce(sigterm_notice(120.0))
                got.wait(30)
                delays.append(time.monotonic() - sent)
                stop.set()
                thread.join()
            # The cost of watching: a quiet minute of one watcher, in requests.
            quiet = PeerNotices(GroupRun(GroupSettings(2, 1), store, "quiet").group, 1, None, 2.0)
            stop = threading.Event()
            thread = threading.Thread(target=quiet.run, args=(lambda n: None, stop), daemon=True)
            thread.start()
            time.sleep(args.quiet)
            stop.set()
            thread.join()
        finally:
            if server is not None:
                server.stop()  # type: ignore[attr-defined]
    q = statistics.quantiles(delays, n=10, method="inclusive")  # never past the max
    print(
        f"peer notice delay over {len(delays)} trials ({args.store}): "
        f"median {statistics.median(delays):.2f}s, p90 {q[8]:.2f}s, max {max(delays):.2f}s"
    )
    per_hour = quiet.requests / args.quiet * 3600
    print(f"watching: {quiet.requests} requests in {args.quiet:g}s, {per_hour:.0f} per node-hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
