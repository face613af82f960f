"""The emulator's fault knobs: failed, slow, throttled or unanswered metadata requests, and
an outage. Every metadata request (token PUTs included) asks :meth:`Faults.take_fault` first."""

from __future__ import annotations

import threading
import time
from typing import Any


class Faults:
    """The fault knobs, behind their own lock (a mixin of :class:`~.state.MockState`)."""

    def __init__(self) -> None:
        self._faults_lock = threading.Lock()
        self._fail_count = 0
        self._fail_status = 500
        self._delay = 0.0
        self._throttle_every = 0
        self._answers = 0
        self._outage_until = 0.0
        self._outage_status = 503
        self._hop_limit_1 = False

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` metadata requests (token PUTs included) with ``status``."""
        with self._faults_lock:
            self._fail_count, self._fail_status = n, status

    def delay(self, seconds: float) -> None:
        """Hold every metadata response ``seconds`` before answering (0 to stop)."""
        with self._faults_lock:
            self._delay = seconds

    def throttle(self, every: int) -> None:
        """Answer every ``every``-th metadata request with 429, as a busy IMDS (0: off)."""
        with self._faults_lock:
            self._throttle_every, self._answers = max(every, 0), 0

    def outage(self, seconds: float, status: int = 503) -> None:
        """Answer every metadata request with ``status`` for the next ``seconds``."""
        with self._faults_lock:
            self._outage_until, self._outage_status = time.time() + seconds, status

    def hop_limit_1(self, on: bool = True) -> None:
        """Never deliver token PUT replies, as a hop limit of 1 does inside a container."""
        with self._faults_lock:
            self._hop_limit_1 = on

    def clear_faults(self) -> None:
        """End every fault injection."""
        with self._faults_lock:
            self._fail_count = 0
            self._delay = 0.0
            self._throttle_every = 0
            self._outage_until = 0.0
            self._hop_limit_1 = False

    def take_fault(self, *, token_request: bool) -> tuple[int | None, float, bool]:
        """(status to fail with or None, delay, never answer) for one metadata request."""
        with self._faults_lock:
            self._answers += 1
            status = None
            if self._fail_count > 0:
                self._fail_count -= 1
                status = self._fail_status
            elif time.time() < self._outage_until:
                status = self._outage_status
            elif self._throttle_every and self._answers % self._throttle_every == 0:
                status = 429
            return status, self._delay, token_request and self._hop_limit_1

    def fault_state(self) -> dict[str, Any]:
        """The knobs as the control API reports them."""
        with self._faults_lock:
            return {
                "fail_next": self._fail_count,
                "delay": self._delay,
                "throttle_every": self._throttle_every,
                "outage_seconds_left": max(0.0, round(self._outage_until - time.time(), 1)),
                "hop_limit_1": self._hop_limit_1,
            }
