"""The emulator's IMDSv2 session tokens: issued by ``PUT /latest/api/token`` for a TTL the
client asks for, checked (and their remaining seconds served) on every GET."""

from __future__ import annotations

import secrets
import threading
import time

from agent.notices.protocol import MAX_TOKEN_TTL


class Tokens:
    """Live tokens and their expiry, behind their own lock (a mixin of
    :class:`~.state.MockState`). ``require_token``: IMDSv1 (no token) is refused."""

    def __init__(self, *, require_token: bool = True, token_ttl_max: int = MAX_TOKEN_TTL) -> None:
        self.require_token = require_token
        self.token_ttl_max = token_ttl_max
        self._tokens_lock = threading.Lock()
        self._tokens: dict[str, float] = {}

    def issue_token(self, ttl_header: str | None) -> tuple[int, str]:
        try:
            ttl = int(ttl_header or "")
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= self.token_ttl_max:
            return 400, f"Bad Request: the token TTL must be 1..{self.token_ttl_max} seconds\n"
        token = secrets.token_urlsafe(42)
        with self._tokens_lock:
            self._tokens[token] = time.time() + ttl
        return 200, token

    def token_seconds_left(self, token: str | None) -> int | None:
        """The token's remaining lifetime; None when it is unknown or expired."""
        if token is None:
            return None
        with self._tokens_lock:
            expires = self._tokens.get(token)
        left = None if expires is None else int(expires - time.time())
        return left if left is not None and left > 0 else None

    def token_ok(self, token: str | None) -> bool:
        if token is None:
            return not self.require_token
        # A wrong token is refused even when IMDSv1 is allowed, as on EC2.
        return self.token_seconds_left(token) is not None

    def drop_tokens(self) -> None:
        """Forget every token, as an IMDS restart does: their next use gets 401."""
        with self._tokens_lock:
            self._tokens.clear()

    def live_tokens(self) -> int:
        with self._tokens_lock:
            return len(self._tokens)
