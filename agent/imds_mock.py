"""A local EC2 instance metadata service (IMDSv2) for trying spot-agent without EC2.

Run it with ``spot-agent imds-mock`` (or ``python -m agent.imds_mock``) and point the
agent at it::

    spot-agent imds-mock --notice-after 60 --action stop
    export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:1338

It serves, in the formats EC2 uses (all ``text/plain``):

- ``PUT /latest/api/token`` (header ``X-aws-ec2-metadata-token-ttl-seconds``, 1..21600);
- ``/latest/meta-data/spot/instance-action`` and ``spot/termination-time`` (404 until a
  notice is due), ``events/recommendations/rebalance``, ``events/maintenance/scheduled``;
- ``instance-id``, ``instance-type``, ``ami-id``, ``placement/availability-zone``,
  ``placement/region`` and ``/latest/dynamic/instance-identity/document``.

A control API lets you trigger notices from another shell (no token needed)::

    curl -X POST 'http://127.0.0.1:1338/spot-agent-mock/interrupt?in=120&action=stop'
    curl -X POST  http://127.0.0.1:1338/spot-agent-mock/rebalance
    curl -X POST 'http://127.0.0.1:1338/spot-agent-mock/scheduled?code=instance-stop&in=600'
    curl -X POST 'http://127.0.0.1:1338/spot-agent-mock/fail?n=3&status=500'
    curl -X POST  http://127.0.0.1:1338/spot-agent-mock/drop-tokens
    curl -X POST  http://127.0.0.1:1338/spot-agent-mock/clear
    curl          http://127.0.0.1:1338/spot-agent-mock/state

``interrupt`` makes instance-action say that ``action`` happens ``in`` seconds from now;
``fail`` answers the next ``n`` metadata requests with ``status``; ``clear`` removes every
notice and event and ends fault injection.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_PORT = 1338  # the port amazon-ec2-metadata-mock uses
MAX_TOKEN_TTL = 21600
ACTIONS = ("terminate", "stop", "hibernate")
EVENT_CODES = (
    "instance-stop",
    "instance-retirement",
    "instance-reboot",
    "system-reboot",
    "system-maintenance",
)
CONTROL_PREFIX = "/spot-agent-mock/"

INSTANCE_ID = "i-0123456789abcdef0"
INSTANCE_TYPE = "m5.large"
AMI_ID = "ami-0123456789abcdef0"
REGION = "us-east-1"
ZONE = "us-east-1a"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NOT_FOUND = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n'
    "<html><head><title>404 - Not Found</title></head>"
    "<body><h1>404 - Not Found</h1></body></html>\n"
)


def iso(epoch: float) -> str:
    """The timestamp format of instance-action and rebalance: ``2026-11-23T12:00:00Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ec2_event_time(epoch: float) -> str:
    """The timestamp format of scheduled events: ``21 Jan 2019 09:00:43 GMT``."""
    # Built by hand: %b follows the process locale, EC2's month names do not.
    moment = datetime.fromtimestamp(epoch, UTC)
    month = _MONTHS[moment.month - 1]
    return f"{moment.day} {month} {moment.year} {moment:%H:%M:%S} GMT"


class ImdsMock:
    """An IMDSv2 emulator on a ThreadingHTTPServer; all times are wall-clock seconds.

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
        self.host = host
        self.port = port
        self.require_token = require_token
        self.token_ttl_max = token_ttl_max
        self._lock = threading.Lock()
        self.closing = threading.Event()
        #: open client connections: stop() drops them, as a dead service would
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self._tokens: dict[str, float] = {}
        self._fail_count = 0
        self._fail_status = 500
        self._delay = 0.0
        self._notice: tuple[float, str, float] | None = None  # (appears at, action, time)
        self._rebalance_at: float | None = None
        self._events: list[dict[str, Any]] = []
        self._initial = (notice_after, action, notice_lead, rebalance_after, scheduled or [])
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ImdsMock:
        """Serve in a daemon thread; the notice clocks (notice_after, ...) start now."""
        notice_after, action, lead, rebalance_after, scheduled = self._initial
        self._started = now = time.time()
        if notice_after is not None:
            self._notice = (now + notice_after, action, now + notice_after + lead)
        if rebalance_after is not None:
            self._rebalance_at = now + rebalance_after
        for event in scheduled:
            self._events.append(self._complete_event(event))
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

    # -- notices -------------------------------------------------------------------------

    def post_interruption(self, action: str = "terminate", in_seconds: float = 120) -> None:
        """From now on instance-action says ``action`` happens in ``in_seconds``."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        now = time.time()
        with self._lock:
            self._notice = (now, action, now + in_seconds)

    def post_rebalance(self) -> None:
        with self._lock:
            self._rebalance_at = time.time()

    def add_scheduled_event(
        self,
        code: str = "system-reboot",
        in_seconds: float = 86400,
        *,
        duration: float = 7200,
        state: str = "active",
        description: str | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Add an event whose NotBefore is ``in_seconds`` from now; returns it as served."""
        now = time.time()
        event = self._complete_event(
            {
                "Code": code,
                "Description": description,
                "EventId": event_id,
                "NotBefore": ec2_event_time(now + in_seconds),
                "NotAfter": ec2_event_time(now + in_seconds + duration),
                "State": state,
            }
        )
        with self._lock:
            self._events.append(event)
        return event

    def clear(self) -> None:
        """Remove every notice and event and end fault injection; tokens stay valid."""
        with self._lock:
            self._notice = None
            self._rebalance_at = None
            self._events = []
            self._fail_count = 0
            self._delay = 0.0

    # -- fault injection -----------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` metadata requests (token PUTs included) with ``status``."""
        with self._lock:
            self._fail_count = n
            self._fail_status = status

    def delay(self, seconds: float) -> None:
        """Hold every metadata response ``seconds`` before answering (0 to stop)."""
        with self._lock:
            self._delay = seconds

    def drop_tokens(self) -> None:
        """Forget every token, as an IMDS restart does: their next use gets 401."""
        with self._lock:
            self._tokens.clear()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "instance_action": self._instance_action(time.time()),
                "rebalance": self._rebalance_at is not None,
                "scheduled": list(self._events),
                "live_tokens": len(self._tokens),
                "fail_next": self._fail_count,
                "delay": self._delay,
            }

    # -- what is served ------------------------------------------------------------------

    @staticmethod
    def _complete_event(event: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        code = event.get("Code") or "system-reboot"
        return {
            "Code": code,
            "Description": event.get("Description") or f"The instance is scheduled for {code}",
            "EventId": event.get("EventId") or f"instance-event-{uuid.uuid4().hex[:17]}",
            "NotBefore": event.get("NotBefore") or ec2_event_time(now + 86400),
            "NotAfter": event.get("NotAfter") or ec2_event_time(now + 86400 + 7200),
            "State": event.get("State") or "active",
            **{k: v for k, v in event.items() if k == "NotBeforeDeadline" and v},
        }

    def _instance_action(self, now: float) -> dict[str, str] | None:
        if self._notice is None or now < self._notice[0]:
            return None
        return {"action": self._notice[1], "time": iso(self._notice[2])}

    def metadata(self, path: str) -> str | None:
        """The body served at ``path``, or None for 404."""
        now = time.time()
        with self._lock:
            notice = self._instance_action(now)
            rebalance = (
                self._rebalance_at if self._rebalance_at and now >= self._rebalance_at else None
            )
            events = list(self._events)
        document = {
            "accountId": "123456789012",
            "architecture": "x86_64",
            "availabilityZone": ZONE,
            "billingProducts": None,
            "devpayProductCodes": None,
            "marketplaceProductCodes": None,
            "imageId": AMI_ID,
            "instanceId": INSTANCE_ID,
            "instanceType": INSTANCE_TYPE,
            "kernelId": None,
            "pendingTime": iso(self._started),
            "privateIp": "10.0.0.12",
            "ramdiskId": None,
            "region": REGION,
            "version": "2017-09-30",
        }
        static = {
            "/latest/meta-data/instance-id": INSTANCE_ID,
            "/latest/meta-data/instance-type": INSTANCE_TYPE,
            "/latest/meta-data/ami-id": AMI_ID,
            "/latest/meta-data/placement/availability-zone": ZONE,
            "/latest/meta-data/placement/region": REGION,
            "/latest/dynamic/instance-identity/document": json.dumps(document, indent=2),
            "/latest/meta-data/events/maintenance/scheduled": json.dumps(events, indent=2),
        }
        if path in static:
            return static[path]
        if path == "/latest/meta-data/spot/instance-action" and notice:
            return json.dumps(notice)
        if path == "/latest/meta-data/spot/termination-time" and notice:
            return notice["time"]
        if path == "/latest/meta-data/events/recommendations/rebalance" and rebalance:
            return json.dumps({"noticeTime": iso(rebalance)})
        if path in ("/latest/meta-data", "/latest/meta-data/"):
            return "ami-id\nevents/\ninstance-id\ninstance-type\nplacement/\nspot/"
        return None

    def issue_token(self, ttl_header: str | None) -> tuple[int, str]:
        try:
            ttl = int(ttl_header or "")
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= self.token_ttl_max:
            return 400, "Bad Request: X-aws-ec2-metadata-token-ttl-seconds must be 1..21600\n"
        token = secrets.token_urlsafe(42)
        with self._lock:
            self._tokens[token] = time.time() + ttl
        return 200, token

    def token_ok(self, token: str | None) -> bool:
        if token is None:
            return not self.require_token
        # A wrong token is refused even when IMDSv1 is allowed, as on EC2.
        with self._lock:
            expires = self._tokens.get(token)
            return expires is not None and time.time() < expires

    def take_fault(self) -> tuple[int | None, float]:
        """(status to fail with or None, delay) for one metadata request."""
        with self._lock:
            status = None
            if self._fail_count > 0:
                self._fail_count -= 1
                status = self._fail_status
            return status, self._delay

    def control(self, command: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        def arg(name: str, default: str) -> str:
            return query.get(name, [default])[0]

        try:
            if command == "interrupt":
                self.post_interruption(arg("action", "terminate"), float(arg("in", "120")))
            elif command == "rebalance":
                self.post_rebalance()
            elif command == "scheduled":
                code = arg("code", "system-reboot")
                if code not in EVENT_CODES:
                    raise ValueError(f"code must be one of {', '.join(EVENT_CODES)}")
                self.add_scheduled_event(code, float(arg("in", "86400")))
            elif command == "fail":
                self.fail_next(int(arg("n", "1")), int(arg("status", "500")))
            elif command == "delay":
                self.delay(float(arg("seconds", "0")))
            elif command == "drop-tokens":
                self.drop_tokens()
            elif command == "clear":
                self.clear()
            elif command != "state":
                return 404, {"error": f"unknown command {command!r}"}
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

    def _metadata_fault(self) -> bool:
        status, delay = self.mock.take_fault()
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
        if path != "/latest/api/token":
            self._reply(405, "405 - Method Not Allowed\n")
            return
        if self._metadata_fault():
            return
        if self.headers.get("X-Forwarded-For"):
            # EC2 refuses tokens to requests that passed a proxy.
            self._reply(403, "403 - Forbidden\n")
            return
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        status, body = self.mock.issue_token(ttl)
        granted = {"X-aws-ec2-metadata-token-ttl-seconds": ttl or ""} if status == 200 else None
        self._reply(status, body, headers=granted)

    def do_GET(self) -> None:
        if self._control("GET"):
            return
        path = urlsplit(self.path).path
        if path == "/latest/api/token":
            self._reply(405, "405 - Method Not Allowed\n")
            return
        if self._metadata_fault():
            return
        if not self.mock.token_ok(self.headers.get("X-aws-ec2-metadata-token")):
            self._reply(401, "401 - Unauthorized\n", "text/html")
            return
        body = self.mock.metadata(path)
        if body is None:
            self._reply(404, _NOT_FOUND, "text/html")
        else:
            self._reply(200, body)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._control("POST"):
            self._reply(405, "405 - Method Not Allowed\n")


# -- command line --------------------------------------------------------------------------


def _scheduled_spec(value: str) -> tuple[str, float]:
    code, _, seconds = value.partition("@")
    if code not in EVENT_CODES:
        raise argparse.ArgumentTypeError(
            f"event code must be one of {', '.join(EVENT_CODES)}, got {code!r}"
        )
    try:
        in_seconds = float(seconds) if seconds else 86400.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: SECONDS after @ must be a number") from None
    return code, in_seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0 picks one)"
    )
    parser.add_argument(
        "--notice-after",
        type=float,
        metavar="SECONDS",
        help="serve a spot interruption notice this many seconds after start",
    )
    parser.add_argument("--action", choices=ACTIONS, default="terminate")
    parser.add_argument(
        "--notice-lead",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="time between the notice and the action (default %(default)s)",
    )
    parser.add_argument(
        "--rebalance-after",
        type=float,
        metavar="SECONDS",
        help="serve a rebalance recommendation this many seconds after start",
    )
    parser.add_argument(
        "--scheduled",
        type=_scheduled_spec,
        action="append",
        default=[],
        metavar="CODE[@SECONDS]",
        help=f"add a scheduled event ({', '.join(EVENT_CODES)}) starting in SECONDS "
        "(default one day); repeatable",
    )
    parser.add_argument(
        "--no-token", action="store_true", help="also accept IMDSv1 requests without a token"
    )


def main(args: argparse.Namespace) -> int:
    mock = ImdsMock(
        args.host,
        args.port,
        notice_after=args.notice_after,
        action=args.action,
        notice_lead=args.notice_lead,
        rebalance_after=args.rebalance_after,
        require_token=not args.no_token,
    )
    try:
        mock.start()
    except OSError as exc:
        print(f"imds-mock: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    for code, in_seconds in args.scheduled:
        mock.add_scheduled_event(code, in_seconds)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    reachable = mock.url if args.host not in ("0.0.0.0", "::") else f"http://127.0.0.1:{mock.port}"
    print(
        f"imds-mock: EC2 metadata on {mock.url}; "
        f"export AWS_EC2_METADATA_SERVICE_ENDPOINT={reachable}",
        flush=True,
    )
    try:
        while not done.wait(0.5):
            pass
    finally:
        mock.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m agent.imds_mock", description="Local EC2 instance metadata emulator."
    )
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
