"""An HTTP proxy on 127.0.0.1 that injects the faults real fleets see in front of S3.

It forwards every request to the upstream server (SeaweedFS) unchanged, except for the
next N requests that match a fault rule: answer 503 SlowDown, reset the connection, stall
past the client's read timeout, or cut the response body short. Loopback only.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Rule:
    kind: str  # "503", "reset", "stall", "truncate"
    remaining: int
    method: str | None = None  # only requests with this method
    seconds: float = 0.0
    path: str = ""  # only requests whose path contains this


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.faults = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(
        self,
        kind: str,
        count: int,
        *,
        method: str | None = None,
        seconds: float = 0,
        path: str = "",
    ) -> None:
        with self._lock:
            self._rules.append(Rule(kind, count, method, seconds, path))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self.requests += 1
            for rule in self._rules:
                if rule.remaining > 0 and rule.method in (None, method) and rule.path in path:
                    rule.remaining -= 1
                    self.faults += 1
                    return rule
        return None


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            body = self._body()
            rule = proxy.take(self.command, self.path)
            if rule is not None and rule.kind == "reset":
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                self.close_connection = True
                self.connection.close()
                return
            if rule is not None and rule.kind == "stall":
                time.sleep(rule.seconds)
                self.close_connection = True
                return
            if rule is not None and rule.kind == "503":
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOWDOWN)))
                self.end_headers()
                self.wfile.write(SLOWDOWN)
                return
            upstream = http.client.HTTPConnection(
                proxy.upstream_host, proxy.upstream_port, timeout=60
            )
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
                data = resp.read()
            finally:
                upstream.close()
            self.send_response(resp.status, resp.reason)
            head = self.command == "HEAD"
            for key, value in resp.getheaders():
                skip = ("connection", "transfer-encoding") + (() if head else ("content-length",))
                if key.lower() not in skip:
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if rule is not None and rule.kind == "truncate" and data:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


@contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
