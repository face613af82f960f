"""The emulator's HTTP side: IMDSv2 on a ThreadingHTTPServer, plus a control API."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.notices.protocol import (
    MAX_TOKEN_TTL,
    SPOT_ACTIONS,
    TOKEN_HEADER,
    TOKEN_PATH,
    TTL_HEADER,
)

from .state import MockState

DEFAULT_PORT = 1338  # the port amazon-ec2-metadata-mock uses
CONTROL_PREFIX = "/spot-agent-mock/"
#: How long a token PUT is held unanswered under ``hop_limit_1`` (clients give up sooner).
HELD_TOKEN_REPLY = 10.0

_NOT_FOUND = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n'
    "<html><head><title>404 - Not Found</title></head>"
    "<body><h1>404 - Not Found</h1></body></html>\n"
)


class ImdsMock(MockState):
    """An IMDSv2 emulator serving in a daemon thread; see :mod:`agent.imds_mock`.

    ``notice_after`` and ``rebalance_after`` count from :meth:`start`. Each ``scheduled``
    entry is an event in EC2's format (``{"Code": "instance-stop", "NotBefore": ...}``);
    missing fields get plausible values.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        notice_after: float | None = None,
        action: str = "terminate",
        notice_lead: float = 120.0,
        rebalance_after: float | None = None,
        scheduled: list[dict[str, Any]] | None = None,
        require_token: bool = True,
        token_ttl_max: int = MAX_TOKEN_TTL,
    ) -> None:
        super().__init__(require_token=require_token, token_ttl_max=token_ttl_max)
        self.host = host
        self.port = port
        self.closing = threading.Event()
        #: open client connections: stop() drops them, as a dead service would
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        events = [self.complete_event(e) for e in scheduled or []]  # ValueError early
        self._initial = (notice_after, action, notice_lead, rebalance_after, events)
        if action not in SPOT_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(SPOT_ACTIONS)}, got {action!r}")

    def start(self) -> ImdsMock:
        """Serve in a daemon thread; the notice clocks (notice_after, ...) start now."""
        notice_after, action, lead, rebalance_after, events = self._initial
        self._started = now = time.time()
        if notice_after is not None:
            self._schedule_interruption(now + notice_after, action, lead)
        if rebalance_after is not None:
            self._rebalance_at = now + rebalance_after
        self._events.extend(events)
        self._server = ThreadingHTTPServer((self.host, self.port), _Handler)
        self._server.daemon_threads = True
        self._server.mock = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        # A short poll interval makes stop() quick: shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="imds-mock", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: no new connections, and open keep-alive connections are dropped
        (else a client's pooled connection would still be answered by the old handler)."""
        self.closing.set()  # wakes handlers sleeping in an injected delay
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ImdsMock:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def control(self, command: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """One control API call (``POST /spot-agent-mock/COMMAND?ARGS``); see CONTROL_API."""

        def arg(name: str, default: str) -> str:
            return query.get(name, [default])[0]

        commands: dict[str, Callable[[], object]] = {
            "interrupt": lambda: self.post_interruption(
                arg("action", "terminate"), float(arg("in", "120"))
            ),
            "rebalance": self.post_rebalance,
            "scheduled": lambda: self.add_scheduled_event(
                arg("code", "system-reboot"),
                float(arg("in", "86400")),
                duration=float(arg("duration", "7200")),
                state=arg("state", "active"),
            ),
            "fail": lambda: self.fail_next(int(arg("n", "1")), int(arg("status", "500"))),
            "delay": lambda: self.delay(float(arg("seconds", "0"))),
            "throttle": lambda: self.throttle(int(arg("every", "3"))),
            "outage": lambda: self.outage(float(arg("seconds", "40")), int(arg("status", "503"))),
            "hop-limit": lambda: self.hop_limit_1(arg("on", "1") not in ("0", "false", "off")),
            "drop-tokens": self.drop_tokens,
            "clear": self.clear,
            "state": lambda: None,
        }
        if command not in commands:
            return 404, {"error": f"unknown command {command!r}", "commands": sorted(commands)}
        try:
            commands[command]()
        except ValueError as exc:
            return 400, {"error": str(exc)}
        return 200, self.state()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's session expects
    timeout = 10  # idle keep-alive connections must not pin threads forever
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK
    # then stalls every response by ~40 ms.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return "EC2ws"

    def setup(self) -> None:
        super().setup()
        with self.mock._lock:
            self.mock._connections.add(self.connection)

    def finish(self) -> None:
        with self.mock._lock:
            self.mock._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    @property
    def mock(self) -> ImdsMock:
        mock: ImdsMock = self.server.mock  # type: ignore[attr-defined]
        return mock

    def log_message(self, format: str, *args: Any) -> None:
        pass  # an emulator that logs every poll drowns the job's own output

    def _reply(
        self,
        status: int,
        body: str,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _metadata_fault(self, *, token_request: bool = False) -> bool:
        """True when a fault took this request (answered, or dropped unanswered)."""
        status, delay, unanswered = self.mock.take_fault(token_request=token_request)
        if unanswered:
            self.mock.closing.wait(HELD_TOKEN_REPLY)
            self.close_connection = True
            return True
        if delay and self.mock.closing.wait(delay):
            return True  # shutting down: drop the connection unanswered
        if status is not None:
            self._reply(status, f"{status} - injected by imds-mock\n")
            return True
        return False

    def _control(self, method: str) -> bool:
        parts = urlsplit(self.path)
        if not parts.path.startswith(CONTROL_PREFIX):
            return False
        command = parts.path[len(CONTROL_PREFIX) :].strip("/")
        if method != "POST" and command != "state":
            self._reply(405, json.dumps({"error": "use POST"}) + "\n", "application/json")
            return True
        status, body = self.mock.control(command, parse_qs(parts.query))
        self._reply(status, json.dumps(body) + "\n", "application/json")
        return True

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path
        if path != TOKEN_PATH:
            self._reply(405, "405 - Method Not Allowed\n")
            return
        if self._metadata_fault(token_request=True):
            return
        if self.headers.get("X-Forwarded-For"):
            # EC2 refuses tokens to requests that passed a proxy.
            self._reply(403, "403 - Forbidden\n")
            return
        ttl = self.headers.get(TTL_HEADER)
        status, body = self.mock.issue_token(ttl)
        granted = {TTL_HEADER: ttl or ""} if status == 200 else None
        self._reply(status, body, headers=granted)

    def do_GET(self) -> None:
        if self._control("GET"):
            return
        path = urlsplit(self.path).path
        if path.rstrip("/") == TOKEN_PATH:
            self._reply(405, "405 - Method Not Allowed\n")
            return
        if self._metadata_fault():
            return
        token = self.headers.get(TOKEN_HEADER)
        if not self.mock.token_ok(token):
            self._reply(401, "401 - Unauthorized\n", "text/html")
            return
        body = self.mock.metadata(path)
        if body is None:
            self._reply(404, _NOT_FOUND, "text/html")
            return
        left = self.mock.token_seconds_left(token)
        self._reply(200, body, headers=None if left is None else {TTL_HEADER: str(left)})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._control("POST"):
            self._reply(405, "405 - Method Not Allowed\n")
