"""A small IMDS client: bounded quick retries over IMDSv2 session tokens (with the IMDSv1
fallback, :mod:`.tokens`).

Each :meth:`ImdsClient.get` costs at most a few seconds: a timeout is not retried (the
next poll comes soon), a 5xx or a 429 is retried a couple of times after a short pause,
jittered for a 429 so that many clients on one instance do not retry in step.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from .failures import (
    ENDPOINT_VARIABLE,
    ImdsUnavailable,
    explain_request_failure,
    explain_status,
)
from .protocol import DEFAULT_ENDPOINT, MAX_TOKEN_TTL, META_PREFIX
from .tokens import Tokens


class ImdsClient:
    """GETs of the metadata service, each with a few quick retries; IMDSv2 with one token
    reused until shortly before it expires (``allow_v1``: see :class:`.tokens.Tokens`)."""

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
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self._jitter = jitter
        self._session = requests.Session()
        # IMDS is link-local: an HTTP(S)_PROXY from the environment must never see it.
        self._session.trust_env = False
        self._tokens = Tokens(
            self.endpoint,
            self._send,
            token_ttl=token_ttl,
            allow_v1=allow_v1,
            v2_retry_every=v2_retry_every,
            clock=clock,
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], **kwargs: Any) -> ImdsClient:
        endpoint = environ.get(ENDPOINT_VARIABLE, "").strip().rstrip("/") or DEFAULT_ENDPOINT
        return cls(endpoint, **kwargs)

    @property
    def using_v1(self) -> bool:
        return self._tokens.using_v1

    @property
    def allow_v1(self) -> bool:
        return self._tokens.allow_v1

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
        response = self._send("GET", url, self._tokens.headers(may_fall_back=True))
        if response.status_code == 401:
            # The token died early (IMDS restarted, or the clock jumped), or IMDSv1 was
            # turned off under us: start over with a new token, once.
            self._tokens.forget()
            response = self._send("GET", url, self._tokens.headers(may_fall_back=False))
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
