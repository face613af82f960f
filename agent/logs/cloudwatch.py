"""CloudWatch Logs: ship JSON events to one stream, never at the job's expense.

One sender thread takes batches from a bounded queue (``batches.py``: cut at the
service's limits, in time order) and sends each with one PutLogEvents call (botocore
retries the network, within short timeouts; nothing here retries on top of it). All
attempts of a job write to one stream, so an operator reads a multi-day job top to bottom.

What shipping may cost the job is bounded, and what it loses is counted:

- the queue holds at most ``queue_events`` events and ``queue_bytes`` bytes; what does not
  fit is turned away and counted (``logs.dropped`` at most once a minute);
- :meth:`CloudWatchLogs.accepting` tells the producer of the job's lines (``childio``)
  whether it is worth making events at all: not while the queue is full (or holds
  ``unproven_events`` before the endpoint has taken a batch), a send has hung
  for ``stall_seconds``, or after a failed send (for a back-off of ``backoff`` seconds,
  doubling to ``max_backoff``). So an endpoint that black-holes connections costs the job
  nothing but counted events, sooner than any timeout would say so;
- a batch that fails is counted as lost (``logs.send_failed``, once a minute);
- an event over the service's 256 KiB limit is replaced by a visible stand-in;
- :meth:`CloudWatchLogs.close` flushes within the time it is given (the runner passes what
  is left before a notice's deadline), and stops early when a send hangs or fails,
  then one line on stdout says ``logs.shipped`` or ``logs.lost``.

The group and stream are created by the sender when the first write finds them missing
(no call at start: a slow endpoint never delays the job). watchtower is not used: its
queue is unbounded, it retries each batch five times over botocore's retries and reports
loss only as Python warnings, so bounding and counting would mean reaching into its
internals; the batching it would have done is the 40 lines of ``batches.py``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from .. import logs
from .batches import EVENT_OVERHEAD, MAX_EVENT_BYTES, EventQueue, fit


@dataclass(frozen=True)
class ShipLimits:
    """What shipping may hold and how it waits; the defaults are the agent's (tests pass
    smaller ones). None of them is an option: they bound the cost to the job, not a policy."""

    #: a quiet job's events go out at least this often (seconds)
    send_interval: float = 5.0
    #: what may wait in memory for the endpoint before events are turned away (and counted)
    queue_events: int = 200_000
    queue_bytes: int = 64 * 1024 * 1024
    #: what bulk producers may queue before the endpoint has taken a first batch (a healthy
    #: one answers in well under a second, long before a flood of output reaches it)
    unproven_events: int = 50_000
    #: a send taking longer than this means the endpoint is not keeping up: stop making events
    stall_seconds: float = 2.0
    #: after a failed send, no events for this long, doubling up to ``max_backoff``
    backoff: float = 5.0
    max_backoff: float = 60.0
    #: a kind of loss (dropped, failed) is reported on stdout at most this often
    report_every: float = 60.0


__all__ = ["EVENT_OVERHEAD", "MAX_EVENT_BYTES", "CloudWatchLogs", "ShipLimits", "fit", "open_logs"]

log = logs.get_logger()


class CloudWatchLogs:
    """Ships JSON events to one log stream; never blocks the caller."""

    def __init__(
        self, group: str, stream: str, client: Any, limits: ShipLimits = ShipLimits()
    ) -> None:
        self.group = group
        self.stream = stream
        self.client = client
        self.limits = limits
        self.queue = EventQueue(limits.queue_events, limits.queue_bytes)
        self._lock = threading.Lock()
        self.offered = self.sent = self.failed = self.dropped = self.truncated = 0
        self.last_error: str | None = None
        self._send_started: float | None = None  # monotonic, while a PutLogEvents is out
        self._down_until = 0.0
        self._backoff = limits.backoff
        self._group_explained = False
        self._reported: dict[str, float] = {}
        self._sender = threading.Thread(target=self._send_all, name="cloudwatch-logs", daemon=True)
        self._sender.start()

    # -- the caller's side: cheap and bounded --------------------------------------------

    def accepting(self) -> bool:
        """Whether events offered now would likely be sent (a hint for bulk producers).
        Until the endpoint has taken a batch, only ``unproven_events`` may wait."""
        if self._endpoint_down() or not self.queue.has_room():
            return False
        return self.sent > 0 or self.queue.events < self.limits.unproven_events

    def _endpoint_down(self) -> bool:
        """A send failed a moment ago, or one has hung for ``stall_seconds``."""
        now = time.monotonic()
        started = self._send_started
        return now < self._down_until or (
            started is not None and now - started > self.limits.stall_seconds
        )

    def offer(self, message: str) -> None:
        self.offer_many([message])

    def offer_many(self, messages: list[str]) -> None:
        """Queue events (JSON text) in this order; those that do not fit are counted."""
        sized = []
        for message in messages:
            size = len(message) if message.isascii() else len(message.encode("utf-8"))
            if size > MAX_EVENT_BYTES:
                message = fit(message)
                size = len(message.encode("utf-8"))
                with self._lock:
                    self.truncated += 1
            sized.append((message, size))
        taken = self.queue.put_many(sized)
        with self._lock:
            self.offered += taken
        if taken < len(sized):
            self.drop(len(sized) - taken)

    def drop(self, count: int) -> None:
        """Count ``count`` events lost before they reached the queue, and say so (rarely)."""
        with self._lock:
            self.dropped += count
            total = self.dropped
        self._report(
            "logs.dropped",
            dropped=total,
            why="more log events than CloudWatch takes (endpoint slow or unreachable, or "
            "a flood of output): they are counted and dropped, the job is not slowed",
        )

    # -- the sender thread --------------------------------------------------------------

    def _send_all(self) -> None:
        while (batch := self.queue.next_batch(self.limits.send_interval)) is not None:
            self._send_started = time.monotonic()
            try:
                self._send(batch)
            finally:
                self._send_started = None

    def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            try:
                self._put(batch)
            except self.client.exceptions.ResourceNotFoundException:
                self._create_group_and_stream()
                self._put(batch)
        except Exception as exc:  # anything at all: count it, never raise into logging
            with self._lock:
                self.failed += len(batch)
                self.last_error = describe(exc)
            self._down_until = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.limits.max_backoff)
            self._report(
                "logs.send_failed", events=len(batch), failed=self.failed, error=self.last_error
            )
            return
        with self._lock:
            self.sent += len(batch)
        self._down_until = 0.0
        self._backoff = self.limits.backoff

    def _put(self, batch: list[dict[str, Any]]) -> None:
        response = self.client.put_log_events(
            logGroupName=self.group, logStreamName=self.stream, logEvents=batch
        )
        rejected = response.get("rejectedLogEventsInfo")
        if rejected:
            raise RuntimeError(f"events rejected: {rejected}")

    def _create_group_and_stream(self) -> None:
        """The first write found no stream (or no group): create them, idempotently."""
        exists = self.client.exceptions.ResourceAlreadyExistsException
        try:
            self.client.create_log_group(logGroupName=self.group)
            log.info("logs.group_created", group=self.group, _local=True)
        except exists:
            pass
        except Exception as exc:
            if not self._group_explained:
                self._group_explained = True
                log.warning(
                    "logs.group_unavailable",
                    group=self.group,
                    error=describe(exc),
                    why="the log group is missing and cannot be created: grant "
                    "logs:CreateLogGroup or create it beforehand",
                    _local=True,
                )
        with contextlib.suppress(exists):
            self.client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)

    def _report(self, event: str, **fields: Any) -> None:
        """A warning on stdout only, at most once a minute per kind."""
        now = time.monotonic()
        every = self.limits.report_every
        if now - self._reported.get(event, -every) < every:
            return
        self._reported[event] = now
        log.warning(event, group=self.group, stream=self.stream, **fields, _local=True)

    # -- the end ------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Flush what is queued within ``timeout`` seconds, then report on stdout. A send
        that hangs ``stall_seconds``, or a failed one, ends the flush at once: an endpoint
        that does not answer must not hold the container up for the whole timeout."""
        started = time.monotonic()
        deadline = started + max(timeout, 0.0)
        self.queue.close()
        while self._sender.is_alive() and not self._endpoint_down():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._sender.join(min(left, 0.05))
        stats = self.stats()
        fields = {
            "group": self.group,
            "stream": self.stream,
            "events_sent": stats["sent"],
            "seconds": round(time.monotonic() - started, 3),
            "_local": True,
        }
        if stats["lost"]:
            log.warning(
                "logs.lost",
                lost=stats["lost"],
                dropped_queue_full=stats["dropped"],
                failed_to_send=stats["failed"],
                unsent_at_exit=stats["unsent"],
                last_error=self.last_error,
                flush_timeout=round(timeout, 3),
                **fields,
            )
        else:
            log.info("logs.shipped", truncated=stats["truncated"], **fields)

    def stats(self) -> dict[str, int]:
        with self._lock:
            unsent = max(self.offered - self.sent - self.failed, 0)
            return {
                "offered": self.offered,
                "sent": self.sent,
                "failed": self.failed,
                "dropped": self.dropped,
                "truncated": self.truncated,
                "unsent": unsent,
                "lost": self.dropped + self.failed + unsent,
            }


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def open_logs(group: str, stream: str, region: str | None = None) -> CloudWatchLogs | None:
    """A shipper for ``group``/``stream``; None (and one line why) if no client can be made.

    The SDK's own settings apply (credentials, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS, the region
    unless ``region``, AWS_REGION, is given);
    timeouts are short so a dead endpoint fails a batch in seconds, not minutes.
    """
    import boto3
    from botocore.config import Config

    try:
        client = boto3.session.Session(region_name=region).client(
            "logs",
            config=Config(
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )
    except Exception as exc:
        log.warning(
            "logs.cloudwatch_off",
            group=group,
            error=describe(exc),
            why="no CloudWatch Logs client (set AWS_REGION); logging to stdout only",
            _local=True,
        )
        return None
    return CloudWatchLogs(group, stream, client)
