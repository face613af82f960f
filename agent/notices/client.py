"""A small IMDS client: IMDSv2 session tokens, IMDSv1 fallback, bounded quick retries.

Each :meth:`ImdsClient.get` costs at most a few seconds: a timeout is not retried (the
next poll comes soon), a 5xx or a 429 is retried a couple of times after a short pause,
jittered for a 429 so that many clients on one instance do not retry in step.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
import structlog

from .failures import (
    ENDPOINT_VARIABLE,
    ImdsUnavailable,
    explain_request_failure,
    explain_status,
)
from .protocol import (
    DEFAULT_ENDPOINT,
    MAX_TOKEN_TTL,
    META_PREFIX,
    TOKEN_HEADER,
    TOKEN_PATH,
    TTL_HEADER,
)

#: Token failures after which a request without a token (IMDSv1) may still be answered.
_V1_FALLBACK_KINDS = ("token_timeout", "token_refused")


class ImdsClient:
    """IMDSv2 with one token reused until shortly before it expires.

    With ``allow_v1``, a token PUT that times out (hop limit 1 in a container) or is
    refused (403/404/405) makes the client carry on without a token, as botocore and NTH
    do; it logs the fix once and tries IMDSv2 again every ``v2_retry_every`` seconds.
    """

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
        v2_retry_every: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
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
        self.v2_retry_every = v2_retry_every
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._session = requests.Session()
        # IMDS is link-local: an HTTP(S)_PROXY from the environment must never see it.
        self._session.trust_env = False
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._v1 = False  # carrying on without a token
        self._v2_retry_at = 0.0
        self._v1_logged = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **kwargs: Any) -> ImdsClient:
        endpoint = environ.get(ENDPOINT_VARIABLE, "").strip().rstrip("/") or DEFAULT_ENDPOINT
        return cls(endpoint, **kwargs)

    @property
    def using_v1(self) -> bool:
        return self._v1

    def close(self) -> None:
        self._session.close()

    def get(self, path: str) -> str | None:
        """The body at ``path`` (relative to /latest/meta-data/ unless it starts with /).

        None when the service answers 404, which on the notice paths means "no notice".
        """
        url = self._url(path)
        last: ImdsUnavailable | None = None
        for attempt in range(self.retries + 1):
            if last is not None:
                self._sleep(self._pause(attempt, last))
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

        One attempt, no retries: off EC2 this must cost at most the connect timeout.
        """
        try:
            self._get_authorised(self._url("instance-id"))
        except ImdsUnavailable as exc:
            return exc.reason
        return None

    # -- internals -----------------------------------------------------------------------

    def _pause(self, attempt: int, last: ImdsUnavailable) -> float:
        pause = self.backoff * 2.0 ** (attempt - 1)
        if last.kind == "throttled":
            return pause * (0.5 + self._jitter())  # 0.5x .. 1.5x
        return pause

    def _url(self, path: str) -> str:
        return self.endpoint + (path if path.startswith("/") else META_PREFIX + path)

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
            raise explain_request_failure(
                exc,
                self.endpoint,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                token=method == "PUT",
            ) from exc

    def _get_authorised(self, url: str) -> str | None:
        response = self._send("GET", url, self._auth_headers(may_fall_back=True))
        if response.status_code == 401:
            # The token died early (IMDS restarted, or the clock jumped), or IMDSv1 was
            # turned off under us: start over with a new token, once.
            with self._lock:
                self._token = None
                self._v1 = False
            response = self._send("GET", url, self._auth_headers(may_fall_back=False))
            if response.status_code == 401:
                raise ImdsUnavailable(
                    f"{self.endpoint} answered 401 Unauthorized even with a new token",
                    "unauthorized",
                )
        if response.status_code == 200:
            return response.text
        if response.status_code == 404:
            return None
        raise explain_status(response.status_code, self.endpoint, url)

    def _auth_headers(self, *, may_fall_back: bool) -> dict[str, str]:
        token = self._current_token(may_fall_back=may_fall_back)
        return {TOKEN_HEADER: token} if token else {}

    def _current_token(self, *, may_fall_back: bool) -> str | None:
        """The token to send, or None to send none (IMDSv1)."""
        with self._lock:
            now = self._clock()
            if self._v1 and now < self._v2_retry_at:
                return None
            # Refresh with a margin so that a token never expires between check and use.
            margin = min(60.0, self.token_ttl * 0.1)
            if not self._v1 and self._token is not None and now < self._token_expires - margin:
                return self._token
        was_v1 = self._v1
        try:
            token = self._new_token(now)
        except ImdsUnavailable as exc:
            if not (self.allow_v1 and may_fall_back and exc.kind in _V1_FALLBACK_KINDS):
                raise
            self._fall_back_to_v1(now, exc)
            return None
        if was_v1:
            structlog.get_logger().info("imds.v2_restored", endpoint=self.endpoint)
        return token

    def _fall_back_to_v1(self, now: float, cause: ImdsUnavailable) -> None:
        with self._lock:
            self._v1 = True
            self._v2_retry_at = now + self.v2_retry_every
            first, self._v1_logged = not self._v1_logged, True
        if first:
            structlog.get_logger().warning(
                "imds.v1_fallback",
                endpoint=self.endpoint,
                kind=cause.kind,
                reason=cause.reason,
                retry_v2_every=self.v2_retry_every,
            )

    def _new_token(self, now: float) -> str:
        response = self._send("PUT", self.endpoint + TOKEN_PATH, {TTL_HEADER: str(self.token_ttl)})
        status = response.status_code
        if status == 200 and response.text.strip():
            granted = response.headers.get(TTL_HEADER, "")
            ttl = min(self.token_ttl, int(granted)) if granted.isdigit() else self.token_ttl
            with self._lock:
                self._token = response.text.strip()
                self._v1 = False
                # `now` was read before the PUT, so the expiry errs early, never late.
                self._token_expires = now + ttl
                return self._token
        if status in (403, 404, 405):
            v1 = "IMDSv1 fallback is off" if not self.allow_v1 else "IMDSv1 may answer"
            raise ImdsUnavailable(
                f"{self.endpoint} refused the IMDSv2 token request (HTTP {status}) and {v1}: "
                "the metadata endpoint may be disabled, or the request passed a proxy",
                "token_refused",
            )
        if status == 429 or status >= 500:
            raise explain_status(status, self.endpoint, self.endpoint + TOKEN_PATH)
        raise ImdsUnavailable(
            f"{self.endpoint} answered the token request with HTTP {status}", "token_error"
        )
