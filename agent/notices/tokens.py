"""IMDSv2's session token: one token reused until shortly before it expires, and the
IMDSv1 fallback when a token cannot be had.

With ``allow_v1``, a token PUT that times out (hop limit 1 in a container) or is refused
(403/404/405) makes the client carry on without a token, as botocore and NTH do; it logs
the fix once and tries IMDSv2 again every ``v2_retry_every`` seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import requests
import structlog

from .failures import ImdsUnavailable, explain_status
from .protocol import TOKEN_HEADER, TOKEN_PATH, TTL_HEADER

#: Token failures after which a request without a token (IMDSv1) may still be answered.
_V1_FALLBACK_KINDS = ("token_timeout", "token_refused")

Send = Callable[[str, str, dict[str, str]], requests.Response]


class Tokens:
    """The token headers of each request; ``send(method, url, headers)`` makes the PUT."""

    def __init__(
        self,
        endpoint: str,
        send: Send,
        *,
        token_ttl: int,
        allow_v1: bool,
        v2_retry_every: float,
        clock: Callable[[], float],
    ) -> None:
        self.endpoint = endpoint
        self.token_ttl = token_ttl
        self.allow_v1 = allow_v1
        self.v2_retry_every = v2_retry_every
        self._send = send
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._v1 = False  # carrying on without a token
        self._v2_retry_at = 0.0
        self._v1_logged = False

    @property
    def using_v1(self) -> bool:
        return self._v1

    def forget(self) -> None:
        """The service refused the token (401): the next request starts with a new one."""
        with self._lock:
            self._token = None
            self._v1 = False

    def headers(self, *, may_fall_back: bool) -> dict[str, str]:
        """The token header to send, or none (IMDSv1); may PUT for a new token."""
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
