"""Upload or download files with the AWS Common Runtime's S3 client (awscrt), for a row.

    python -m bench.crtcopy put|get ENDPOINT BUCKET PREFIX DIR NAME [NAME...]

put sends DIR/NAME to s3://BUCKET/PREFIX/NAME, get fetches it back into DIR/NAME; every
transfer is in flight at once and the CRT splits each into parts (multipart upload, ranged
GETs) on its own threads, as boto3's CRT transfer path does. Credentials come from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; ENDPOINT must be http://127.0.0.1:PORT.

It drives awscrt directly, not through boto3: boto3's CRT path signs for and connects to
the AWS endpoint whatever the client's endpoint_url, and this benchmark talks only to its
local server. awscrt is not installed in the shared environment (with it present, botocore
swaps in the CRT's SigV4 signer, which would change every other row): bench/run
--awscrt-path DIR puts a `pip install --target DIR awscrt` on this process's path alone.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from awscrt.auth import AwsCredentialsProvider  # type: ignore[import-not-found]
from awscrt.http import HttpHeaders, HttpRequest  # type: ignore[import-not-found]
from awscrt.s3 import (  # type: ignore[import-not-found]
    S3Client,
    S3RequestTlsMode,
    S3RequestType,
    create_default_s3_signing_config,
)

PART = 8 << 20  # the agent's chunk size


def main(argv: list[str]) -> int:
    op, endpoint, bucket, prefix, directory, *names = argv
    host = urlsplit(endpoint)
    if host.hostname != "127.0.0.1" or host.port is None:
        raise SystemExit(f"crtcopy: ENDPOINT must be http://127.0.0.1:PORT, not {endpoint}")
    creds = AwsCredentialsProvider.new_static(
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    )
    region = os.environ.get("AWS_REGION", "us-east-1")
    client = S3Client(
        region=region,
        tls_mode=S3RequestTlsMode.DISABLED,
        signing_config=create_default_s3_signing_config(region=region, credential_provider=creds),
        part_size=PART,
    )
    pending: list[Future[None]] = []
    requests: list[Any] = []  # the CRT's handles must outlive the transfers
    for name in names:
        path = Path(directory) / name
        key = f"/{bucket}/{quote(f'{prefix}/{name}')}"
        headers = HttpHeaders([("Host", host.netloc)])
        if op == "put":
            headers.add("Content-Length", str(path.stat().st_size))
            headers.add("Content-Type", "application/octet-stream")
            kind, files = S3RequestType.PUT_OBJECT, {"send_filepath": str(path)}
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            kind, files = S3RequestType.GET_OBJECT, {"recv_filepath": str(path)}
        done: Future[None] = Future()
        requests.append(
            client.make_request(
                type=kind,
                request=HttpRequest("PUT" if op == "put" else "GET", key, headers),
                on_done=_finisher(done, name),
                **files,
            )
        )
        pending.append(done)
    for done in pending:
        done.result()
    return 0


def _finisher(done: Future[None], name: str) -> Any:
    lock = threading.Lock()

    def on_done(error: Exception | None = None, error_body: bytes | None = None, **_: Any) -> None:
        with lock:
            if error is None:
                done.set_result(None)
            else:
                detail = (error_body or b"")[:300].decode(errors="replace")
                done.set_exception(RuntimeError(f"{name}: {error} {detail}"))

    return on_done


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
