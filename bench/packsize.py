"""What one request costs on the local SeaweedFS, in bytes: the basis of PACK_THRESHOLD.

    PYTHONPATH=$PWD python3 -m bench.packsize

PUTs and GETs objects of growing sizes one after another on one connection (the agent's
S3 client, checksums and all) and prints the median time per request. The time of the
smallest request is the fixed cost of a request; the slope between the two largest sizes
is one connection's transfer rate. Their product is the size at which a file's own
request costs as much as transferring it: files well below it should share requests
(packs), files well above it gain nothing from sharing.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

from checkpoint.engine.store.s3 import S3Store
from tests import servers

SIZES = (1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = servers.start_seaweedfs(Path(tmp), sse_kek=False)
        try:
            run(server)
        finally:
            server.stop()


def run(server: servers.SeaweedS3) -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=server.endpoint,
    )
    client = boto3.session.Session().client(
        "s3", endpoint_url=server.endpoint, config=Config(s3={"addressing_style": "path"})
    )
    client.create_bucket(Bucket="packsize")
    store = S3Store.from_uri("s3://packsize/p")
    put_ms: dict[int, float] = {}
    get_ms: dict[int, float] = {}
    for size in SIZES:
        n = max(5, min(60, (64 << 20) // size))
        data = [os.urandom(size) for _ in range(min(n, 8))]
        puts, gets = [], []
        for i in range(n):
            t = time.perf_counter()
            store.put_object(f"o/{size}/{i}", data[i % len(data)])
            puts.append(time.perf_counter() - t)
        for i in range(n):
            t = time.perf_counter()
            store.get_range(f"o/{size}/{i}", 0, size)
            gets.append(time.perf_counter() - t)
        put_ms[size] = statistics.median(puts) * 1000
        get_ms[size] = statistics.median(gets) * 1000
        print(f"{size >> 10:>6} KiB  PUT {put_ms[size]:7.2f} ms  GET {get_ms[size]:7.2f} ms")
    for name, ms in (("PUT", put_ms), ("GET", get_ms)):
        fixed = ms[SIZES[0]] / 1000
        rate = (SIZES[-1] - SIZES[-2]) / ((ms[SIZES[-1]] - ms[SIZES[-2]]) / 1000)
        print(
            f"{name}: {fixed * 1000:.2f} ms per request, {rate / (1 << 20):.0f} MiB/s per "
            f"connection: a request costs as much as {fixed * rate / 1024:.0f} KiB"
        )
    store.close()
    client.close()


if __name__ == "__main__":
    main()
