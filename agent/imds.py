"""EC2 instance metadata (IMDSv2): a small client, parsers for the notice paths, a source.

:class:`ImdsClient` fetches metadata with a session token, bounded retries and short
timeouts; :class:`ImdsSource` polls the spot, rebalance and scheduled-event paths and
posts :class:`~agent.notices.Notice` objects. The parsers are pure functions so that the
formats EC2 uses (and the ways they can be malformed) are tested without HTTP.
"""

from __future__ import annotations

import errno
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import structlog

from agent.notices import INTERRUPTION, REBALANCE, SCHEDULED, Notice, utcnow

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_VARIABLE = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600

INSTANCE_ACTION = "spot/instance-action"
TERMINATION_TIME = "spot/termination-time"
REBALANCE_PATH = "events/recommendations/rebalance"
SCHEDULED_PATH = "events/maintenance/scheduled"

#: EC2 gives two minutes between the instance-action notice and the action itself.
SPOT_WARNING = timedelta(seconds=120)
#: Scheduled-event codes that end the instance (or our process on it).
INTERRUPTING_CODES = frozenset({"instance-stop", "instance-retirement", "instance-terminate"})


def looks_like_ec2(sys_root: str = "/sys") -> bool:
    """True on EC2 hardware (Nitro DMI or a Xen hypervisor uuid), without any network call.

    ``--imds auto`` asks this before probing, so a laptop or a CI runner never sends a
    request to the link-local metadata address.
    """
    signatures = (
        ("class/dmi/id/sys_vendor", "amazon ec2"),
        ("class/dmi/id/board_asset_tag", "i-"),
        ("hypervisor/uuid", "ec2"),
    )
    for rel, prefix in signatures:
        try:
            with open(f"{sys_root}/{rel}") as fh:
                if fh.read().strip().lower().startswith(prefix):
                    return True
        except OSError:
            continue
    return False


class ImdsUnavailable(Exception):
    """The metadata service could not answer; ``reason`` is one line for a human."""

    def __init__(self, reason: str, kind: str = "error", *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.retryable = retryable


def _errno_of(exc: BaseException) -> int | None:
    """The OS error number buried in requests' and urllib3's wrapped exceptions."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.errno:
            return item.errno
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return None


class ImdsClient:
    """IMDSv2 with one token reused until shortly before it expires."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        token_ttl: int = MAX_TOKEN_TTL,
        connect_timeout: float = 1.0,
        read_timeout: float = 2.0,
        retries: int = 2,
        allow_v1: bool = False,
        backoff: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not re.match(r"^https?://[^/\s]+", endpoint):
            raise ValueError(
                f"{ENDPOINT_VARIABLE} must look like http://169.254.169.254, got {endpoint!r}"
            )
        if not 1 <= token_ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"token_ttl must be between 1 and {MAX_TOKEN_TTL} seconds")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.endpoint = endpoint.rstrip("/")
        self.token_ttl = token_ttl
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.allow_v1 = allow_v1
        self.backoff = backoff
        self._clock = clock
        self._sleep = sleep
        self._session = requests.Session()
        # IMDS is link-local: an HTTP(S)_PROXY from the environment must never see it.
        self._session.trust_env = False
        self._token: str | None = None
        self._token_expires = 0.0
        self._v1 = False
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **kwargs: Any) -> ImdsClient:
        endpoint = environ.get(ENDPOINT_VARIABLE, "").strip().rstrip("/") or DEFAULT_ENDPOINT
        return cls(endpoint, **kwargs)

    def close(self) -> None:
        self._session.close()

    def get(self, path: str) -> str | None:
        """The body at ``path`` (relative to /latest/meta-data/ unless it starts with /).

        None when the service answers 404, which on the notice paths means "no notice".
        """
        url = self._url(path)
        last: ImdsUnavailable | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._get_authorised(url)
            except ImdsUnavailable as exc:
                if not exc.retryable:
                    raise
                last = exc
        assert last is not None
        raise ImdsUnavailable(
            f"{last.reason} ({self.retries + 1} attempts)", last.kind, retryable=True
        )

    def probe(self) -> str | None:
        """None if the service answers; else one line saying why not and what to check.

        One attempt, no retries: off EC2 this must cost at most the connect timeout. A 5xx
        counts as reachable, since a glitch at start must not turn polling off for days.
        """
        try:
            self._get_authorised(self._url("instance-id"))
        except ImdsUnavailable as exc:
            return None if exc.kind == "http_5xx" else exc.reason
        return None

    # -- internals -----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.endpoint + (path if path.startswith("/") else "/latest/meta-data/" + path)

    def _send(self, method: str, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self._session.request(
                method,
                url,
                headers=headers,
                timeout=(self.connect_timeout, self.read_timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise self._failure(exc, token=method == "PUT") from exc

    def _failure(self, exc: requests.RequestException, *, token: bool) -> ImdsUnavailable:
        ep = self.endpoint
        if isinstance(exc, requests.ConnectTimeout):
            return ImdsUnavailable(
                f"no answer from {ep} within {self.connect_timeout:g} s: probably not running "
                "on EC2, or the instance metadata endpoint is disabled",
                "connect_timeout",
                retryable=True,
            )
        if isinstance(exc, requests.ReadTimeout) and token:
            # The PUT reached IMDS but its reply, sent with IP TTL = hop limit, died on the
            # container's extra network hop: the classic "works on the host, not in Docker".
            return ImdsUnavailable(
                f"the IMDSv2 token request to {ep} got no reply within {self.read_timeout:g} s: "
                "inside a container the instance's metadata hop limit is probably 1; set "
                "HttpPutResponseHopLimit to 2 (aws ec2 modify-instance-metadata-options "
                "--http-put-response-hop-limit 2)",
                "token_timeout",
                retryable=True,
            )
        if isinstance(exc, requests.Timeout):
            return ImdsUnavailable(
                f"{ep} accepted the connection but did not answer within {self.read_timeout:g} s",
                "read_timeout",
                retryable=True,
            )
        code = _errno_of(exc)
        if code == errno.ECONNREFUSED:
            return ImdsUnavailable(
                f"connection to {ep} refused: not running on EC2, or {ENDPOINT_VARIABLE} "
                "names a port where nothing listens",
                "connection_refused",
                retryable=True,
            )
        if code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return ImdsUnavailable(
                f"{ep} is unreachable ({errno.errorcode.get(code, code)}): not running on EC2",
                "unreachable",
                retryable=True,
            )
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        return ImdsUnavailable(
            f"cannot reach {ep}: {first_line}", "connection_error", retryable=True
        )

    def _get_authorised(self, url: str) -> str | None:
        response = self._send("GET", url, self._auth_headers())
        if response.status_code == 401:
            # The token died early (IMDS restarted, or the clock jumped), or IMDSv1 was
            # turned off under us: start over with a new token, once.
            with self._lock:
                self._token = None
                self._v1 = False
            response = self._send("GET", url, self._auth_headers())
            if response.status_code == 401:
                raise ImdsUnavailable(
                    f"{self.endpoint} answered 401 Unauthorized even with a new token",
                    "unauthorized",
                )
        if response.status_code == 200:
            return response.text
        if response.status_code == 404:
            return None
        if response.status_code >= 500:
            raise ImdsUnavailable(
                f"{self.endpoint} answered HTTP {response.status_code}", "http_5xx", retryable=True
            )
        raise ImdsUnavailable(
            f"{self.endpoint} answered HTTP {response.status_code} for {url}", "http_error"
        )

    def _auth_headers(self) -> dict[str, str]:
        token = self._current_token()
        return {TOKEN_HEADER: token} if token else {}

    def _current_token(self) -> str | None:
        with self._lock:
            if self._v1:
                return None
            # Refresh with a margin so that a token never expires between check and use.
            margin = min(60.0, self.token_ttl * 0.1)
            now = self._clock()
            if self._token is not None and now < self._token_expires - margin:
                return self._token
        response = self._send("PUT", self.endpoint + TOKEN_PATH, {TTL_HEADER: str(self.token_ttl)})
        status = response.status_code
        if status == 200 and response.text.strip():
            granted = response.headers.get(TTL_HEADER, "")
            ttl = min(self.token_ttl, int(granted)) if granted.isdigit() else self.token_ttl
            with self._lock:
                self._token = response.text.strip()
                # `now` was read before the PUT, so the expiry errs early, never late.
                self._token_expires = now + ttl
                return self._token
        if status in (403, 404, 405):
            if self.allow_v1:
                structlog.get_logger().info(
                    "imds_v1_fallback", endpoint=self.endpoint, token_status=status
                )
                with self._lock:
                    self._v1 = True
                return None
            raise ImdsUnavailable(
                f"{self.endpoint} refused the IMDSv2 token request (HTTP {status}) and IMDSv1 "
                "fallback is off: the metadata endpoint may be disabled, or the request passed "
                "a proxy",
                "token_refused",
            )
        raise ImdsUnavailable(
            f"{self.endpoint} answered the token request with HTTP {status}",
            "http_5xx" if status >= 500 else "token_error",
            retryable=status >= 500,
        )


# -- parsers: pure functions from a response body to notices -------------------------------

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_EC2_TIME = re.compile(r"^(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d{1,2}):(\d{2}):(\d{2}) (?:GMT|UTC)$")


def parse_time(value: object) -> datetime | None:
    """ISO 8601 (``2026-11-23T12:00:00Z``) or EC2's event format (``21 Jan 2019 09:00:43 GMT``)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    match = _EC2_TIME.match(text)
    if match:
        day, month, year, hour, minute, second = match.groups()
        month_number = _MONTHS.get(month.title())
        if month_number is None:
            return None
        try:
            return datetime(
                int(year),
                month_number,
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=UTC,
            )
        except ValueError:
            return None
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"  # fromisoformat accepts "Z" only from Python 3.11
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _load_json(body: str) -> Any:
    """The decoded body, or None when it is not JSON (the callers log what that means)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def parse_instance_action(body: str, now: datetime | None = None) -> Notice:
    """``spot/instance-action``: EC2 serves this path only once an interruption is scheduled.

    So even an unreadable body means an interruption is coming: we assume the standard
    two-minute warning from now. Acting early costs a checkpoint and a retry; ignoring it
    would lose everything since the last checkpoint.
    """
    now = now or utcnow()
    data = _load_json(body)
    if not isinstance(data, dict):
        structlog.get_logger().warning(
            "imds_malformed_notice", path=INSTANCE_ACTION, body=body[:200]
        )
        return Notice(
            kind=INTERRUPTION,
            source="imds:spot",
            action="terminate",
            deadline=now + SPOT_WARNING,
            received=now,
            detail={"malformed": True, "raw": body[:500]},
        )
    action = data.get("action")
    action = action.strip().lower() if isinstance(action, str) and action.strip() else "terminate"
    deadline = parse_time(data.get("time"))
    if deadline is None:
        structlog.get_logger().warning("imds_malformed_notice", path=INSTANCE_ACTION, field="time")
        deadline = now + SPOT_WARNING
    # A time already in the past stays as is: the runner then acts at once, which is right.
    return Notice(
        kind=INTERRUPTION,
        source="imds:spot",
        action=action,
        deadline=deadline,
        received=now,
        detail=data,
    )


def parse_termination_time(body: str, now: datetime | None = None) -> Notice:
    """Legacy ``spot/termination-time``: a bare timestamp, present only when terminating."""
    now = now or utcnow()
    deadline = parse_time(body)
    if deadline is None:
        structlog.get_logger().warning(
            "imds_malformed_notice", path=TERMINATION_TIME, body=body[:200]
        )
        deadline = now + SPOT_WARNING  # same reasoning as for instance-action
    return Notice(
        kind=INTERRUPTION,
        source="imds:spot",
        action="terminate",
        deadline=deadline,
        received=now,
        detail={"termination-time": body.strip()[:200]},
    )


def parse_rebalance(body: str, now: datetime | None = None) -> Notice:
    """``events/recommendations/rebalance``: an early warning, whatever the body says."""
    now = now or utcnow()
    data = _load_json(body)
    if not isinstance(data, dict):
        structlog.get_logger().warning(
            "imds_malformed_notice", path=REBALANCE_PATH, body=body[:200]
        )
        data = {"malformed": True, "raw": body[:500]}
    return Notice(
        kind=REBALANCE,
        source="imds:rebalance",
        action="rebalance",
        deadline=None,
        received=now,
        detail=data,
    )


def parse_scheduled(body: str, now: datetime | None = None) -> list[Notice]:
    """``events/maintenance/scheduled``: one notice per active event.

    A malformed list yields nothing: unlike instance-action, its presence says nothing
    (EC2 serves ``[]`` when there is no event), and stopping a multi-day job on a guess
    would cost more than the hours or days of warning scheduled events come with.
    """
    now = now or utcnow()
    data = _load_json(body)
    if not isinstance(data, list):
        structlog.get_logger().warning(
            "imds_malformed_notice", path=SCHEDULED_PATH, body=body[:200]
        )
        return []
    notices = []
    for event in data:
        if not isinstance(event, dict) or not isinstance(event.get("Code"), str):
            structlog.get_logger().warning("imds_malformed_event", entry=repr(event)[:200])
            continue
        if str(event.get("State", "active")).lower() != "active":
            continue  # completed or canceled
        notices.append(
            Notice(
                kind=SCHEDULED,
                source="imds:scheduled",
                action=event["Code"],
                deadline=parse_time(event.get("NotBefore")),
                received=now,
                detail=event,
            )
        )
    return notices


def scheduled_is_interruption(
    notice: Notice, window_seconds: float, now: datetime | None = None
) -> bool:
    """True for a stop, retirement or termination due within ``window_seconds`` (or overdue).

    An event without a readable NotBefore cannot be placed in the window, so it is not one.
    """
    if notice.action not in INTERRUPTING_CODES:
        return False
    left = notice.seconds_left(now)
    return left is not None and left <= window_seconds


# -- the notice source ---------------------------------------------------------------------


class ImdsSource:
    """Polls IMDS for notices and posts each new one; never raises, never stalls long.

    Scheduled events are posted as SCHEDULED when first seen; a stop or retirement due
    within ``scheduled_window`` seconds is posted again as an INTERRUPTION, leaving the
    job that long to checkpoint (more than the two minutes a spot notice gives).
    While IMDS fails, polls back off from ``interval`` doubling up to ``max_backoff``.
    """

    name = "imds"

    def __init__(
        self,
        client: ImdsClient,
        interval: float = 2.0,
        scheduled_window: float = 600.0,
        *,
        max_backoff: float = 30.0,
        log_every: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.interval = interval
        self.scheduled_window = scheduled_window
        self.max_backoff = max_backoff
        self.log_every = log_every
        self._clock = clock
        self._posted: set[tuple[str, str, str, str]] = set()
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.failures = 0

    def poll_once(self) -> list[Notice]:
        """Every notice IMDS shows now. Raises :class:`ImdsUnavailable` when it cannot tell."""
        notices, error = self._poll()
        if error is not None:
            raise error
        return notices

    def _poll(self) -> tuple[list[Notice], Exception | None]:
        """What IMDS shows, path by path, the spot notice first. A failing path ends the
        poll (when the service is down, one timeout per poll is enough) but never hides
        what was read before it: a spot notice is posted even if events/ answers 403 or
        the rebalance path times out. Returns the notices found and the error, if any."""
        notices: list[Notice] = []
        for read in (self._spot, self._rebalance, self._scheduled):
            try:
                notices.extend(read())
            except Exception as exc:
                return notices, exc
        return notices, None

    def _spot(self) -> list[Notice]:
        body = self.client.get(INSTANCE_ACTION)
        if body is not None:
            return [parse_instance_action(body)]
        legacy = self.client.get(TERMINATION_TIME)
        return [parse_termination_time(legacy)] if legacy is not None else []

    def _rebalance(self) -> list[Notice]:
        body = self.client.get(REBALANCE_PATH)
        return [parse_rebalance(body)] if body is not None else []

    def _scheduled(self) -> list[Notice]:
        body = self.client.get(SCHEDULED_PATH)
        notices: list[Notice] = []
        for event in parse_scheduled(body) if body is not None else []:
            notices.append(event)
            if scheduled_is_interruption(event, self.scheduled_window):
                notices.append(
                    Notice(
                        kind=INTERRUPTION,
                        source=event.source,
                        action=event.action,
                        deadline=event.deadline,
                        received=event.received,
                        detail=event.detail,
                    )
                )
        return notices

    def run(self, post: Callable[[Notice], None], stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.interval
            try:
                notices, error = self._poll()
                for notice in notices:  # posted even when another path failed
                    key = self._key(notice)
                    if key not in self._posted:
                        post(notice)
                        self._posted.add(key)  # only once posted: a failed post is retried
                if error is not None:
                    raise error
                if self.failures:
                    structlog.get_logger().info("imds_recovered", after_failures=self.failures)
                self.failures = 0
            except Exception as exc:  # a notice source must never kill the agent
                self.failures += 1
                delay = min(self.max_backoff, self.interval * 2**self.failures)
                self._report(exc, delay)
            stop.wait(delay)

    @staticmethod
    def _key(notice: Notice) -> tuple[str, str, str, str]:
        # From what IMDS said, not from the deadline: a malformed notice's deadline is
        # derived from the time it was read and would change on every poll.
        said = json.dumps(notice.detail, sort_keys=True, default=str)
        return (notice.kind, notice.source, notice.action, said)

    def _report(self, exc: Exception, retry_in: float) -> None:
        """Log each kind of failure at most once per ``log_every`` seconds."""
        kind = exc.kind if isinstance(exc, ImdsUnavailable) else type(exc).__name__
        now = self._clock()
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.log_every:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_logged[kind] = now
        structlog.get_logger().warning(
            "imds_poll_failed",
            kind=kind,
            reason=str(exc) or type(exc).__name__,
            retry_in=retry_in,
            suppressed=self._suppressed.pop(kind, 0),
            # Expected outages need no traceback; anything else is a bug worth one.
            exc_info=None if isinstance(exc, ImdsUnavailable) else exc,
        )
