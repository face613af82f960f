"""Why the metadata service could not answer, in one line a human can act on."""

from __future__ import annotations

import errno

import requests

#: The one line an operator needs when the token PUT dies on a container's extra hop.
HOP_LIMIT_FIX = (
    "inside a container the instance's metadata hop limit is probably 1; set "
    "HttpPutResponseHopLimit to 2 (aws ec2 modify-instance-metadata-options "
    "--http-put-response-hop-limit 2)"
)
ENDPOINT_VARIABLE = "AWS_EC2_METADATA_SERVICE_ENDPOINT"


class ImdsUnavailable(Exception):
    """The metadata service could not answer; ``reason`` is one line for a human.

    ``kind`` names the failure for logs and tests (``http_5xx``, ``throttled``,
    ``token_timeout``, ...); ``retryable`` says whether a quick retry within the same
    poll may help (a 5xx or a 429 may; a timeout already cost seconds and is left to the
    next poll).
    """

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


def explain_request_failure(
    exc: requests.RequestException,
    endpoint: str,
    *,
    connect_timeout: float,
    read_timeout: float,
    token: bool,
) -> ImdsUnavailable:
    """The failure of one request to ``endpoint`` (``token``: the PUT for a session token)."""
    ep = endpoint
    if isinstance(exc, requests.ConnectTimeout):
        return ImdsUnavailable(
            f"no answer from {ep} within {connect_timeout:g} s: probably not running "
            "on EC2, or the instance metadata endpoint is disabled",
            "connect_timeout",
        )
    if isinstance(exc, requests.ReadTimeout) and token:
        # The PUT reached IMDS but its reply, sent with IP TTL = hop limit, died on the
        # container's extra network hop: the classic "works on the host, not in Docker".
        return ImdsUnavailable(
            f"the IMDSv2 token request to {ep} got no reply within {read_timeout:g} s: "
            + HOP_LIMIT_FIX,
            "token_timeout",
        )
    if isinstance(exc, requests.Timeout):
        return ImdsUnavailable(
            f"{ep} accepted the connection but did not answer within {read_timeout:g} s",
            "read_timeout",
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
        )
    first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return ImdsUnavailable(f"cannot reach {ep}: {first_line}", "connection_error", retryable=True)


def explain_status(status: int, endpoint: str, url: str) -> ImdsUnavailable:
    """A reply that is neither an answer (200), "no such item" (404) nor 401."""
    if status == 429:
        # IMDS limits requests per instance; a short, jittered pause is the cure.
        return ImdsUnavailable(
            f"{endpoint} answered 429 Too Many Requests", "throttled", retryable=True
        )
    if status >= 500:
        return ImdsUnavailable(f"{endpoint} answered HTTP {status}", "http_5xx", retryable=True)
    return ImdsUnavailable(f"{endpoint} answered HTTP {status} for {url}", "http_error")
