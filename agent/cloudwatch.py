"""CloudWatch Logs: a bounded, non-blocking wrapper around watchtower's handler.

watchtower's ``CloudWatchLogHandler`` does the batching: one queue and one sender thread
per stream, batches cut at the service limits (1,048,576 bytes counting 26 bytes per
event, 10,000 events) or every ``SEND_INTERVAL`` seconds. Its sharp edges are handled
here, not worked around at each call:

- its queue is unbounded: :meth:`CloudWatchLogs.offer` bounds it (events and bytes) and
  counts what it turns away, so a slow or unreachable endpoint costs the job nothing but
  log events, never memory or time;
- it retries a failed batch five times and then drops it with a Python warning: here a
  batch is sent once (botocore retries within tight timeouts) and its events are counted
  as lost if it fails;
- it truncates an oversized event by cutting bytes (breaking the JSON): here such an
  event is replaced by a visible stand-in that names the event and how big it was;
- ``close()`` can block 30 s per queue: :meth:`CloudWatchLogs.close` runs it in a thread
  and waits only as long as it is given (the runner passes what is left before a
  notice's deadline), then reports what was delivered and what was lost.

The group and the stream are created by the sender thread when the first write finds
them missing (no call at start: a slow endpoint never delays the job); when the group
cannot be created, one line says so.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from typing import Any

import watchtower

from . import logs

#: CloudWatch Logs limits (PutLogEvents): per event, 256 KiB including 26 bytes overhead
EVENT_OVERHEAD = 26
MAX_EVENT_BYTES = 256 * 1024 - EVENT_OVERHEAD
MAX_BATCH_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 10_000
SEND_INTERVAL = 5

#: what may wait in memory for the endpoint before events are turned away (and counted)
QUEUE_EVENTS = 200_000
QUEUE_BYTES = 64 * 1024 * 1024
REPORT_EVERY = 60.0

log = logs.get_logger()


def fit(message: str, limit: int = MAX_EVENT_BYTES) -> str:
    """``message`` if it fits in one event; else a visible stand-in that does."""
    size = len(message.encode("utf-8"))
    if size <= limit:
        return message
    try:
        original = json.loads(message)
    except ValueError:
        original = {}
    keep = {k: original[k] for k in logs._FIRST if isinstance(original, dict) and k in original}
    budget = limit - 1024
    while True:
        doc = {
            **keep,
            "truncated": True,
            "original_bytes": size,
            "head": message[:budget],
        }
        text = json.dumps(doc)
        if len(text.encode("utf-8")) <= limit:
            return text
        budget //= 2


class _Handler(watchtower.CloudWatchLogHandler):
    """watchtower's batching thread; sending and accounting are the owner's."""

    def __init__(self, owner: CloudWatchLogs, client: Any) -> None:
        self._owner = owner
        super().__init__(
            log_group_name=owner.group,
            log_stream_name=owner.stream,
            boto3_client=client,
            create_log_group=False,  # done by the sender thread: never block the start
            send_interval=SEND_INTERVAL,
            max_batch_size=MAX_BATCH_BYTES,
            max_batch_count=MAX_BATCH_EVENTS,
            max_message_size=MAX_EVENT_BYTES + EVENT_OVERHEAD,
        )
        self.queue: queue.Queue[Any] = queue.Queue()
        self.queues[owner.stream] = self.queue
        self.sequence_tokens[owner.stream] = None
        thread = threading.Thread(
            target=self._dequeue_batch,
            args=(self.queue, owner.stream, SEND_INTERVAL, MAX_BATCH_BYTES, MAX_BATCH_EVENTS),
            name="cloudwatch-logs",
            daemon=True,
        )
        self.threads.append(thread)
        thread.start()

    def _get_stream_name(self, message: Any) -> str:
        return self._owner.stream

    def _submit_batch(self, batch: Any, log_stream_name: Any, max_retries: Any = 0) -> Any:
        self._owner._send(batch)


class CloudWatchLogs:
    """Ships JSON events to one log stream; never blocks the caller."""

    def __init__(self, group: str, stream: str, client: Any) -> None:
        self.group = group
        self.stream = stream
        self.client = client
        self._lock = threading.Lock()
        self._last_ts = 0
        self.queued_events = 0
        self.queued_bytes = 0
        self.offered = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.truncated = 0
        self.last_error: str | None = None
        self._group_explained = False
        self._reported: dict[str, float] = {}
        self._handler = _Handler(self, client)

    # -- the caller's side: cheap and bounded --------------------------------------------

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
                self.truncated += 1
            sized.append((message, size))
        put = self._handler.queue.put
        dropped = 0
        with self._lock:
            # CloudWatch wants each batch in time order: never let the clock step back.
            ts = max(int(time.time() * 1000), self._last_ts)
            self._last_ts = ts
            closed = self._handler.shutting_down
            for message, size in sized:
                if (
                    closed
                    or self.queued_events >= QUEUE_EVENTS
                    or self.queued_bytes + size > QUEUE_BYTES
                ):
                    dropped += 1
                    continue
                self.queued_events += 1
                self.queued_bytes += size
                put({"timestamp": ts, "message": message})
            self.offered += len(sized) - dropped
        if dropped:
            self.drop(dropped)

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

    # -- the sender thread's side -------------------------------------------------------

    def _send(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        size = sum(len(m["message"].encode("utf-8")) for m in batch)
        try:
            try:
                self._put(batch)
            except self.client.exceptions.ResourceNotFoundException:
                self._create_group_and_stream()
                self._put(batch)
            with self._lock:
                self.sent += len(batch)
        except Exception as exc:  # anything at all: count it, never raise into logging
            with self._lock:
                self.failed += len(batch)
                self.last_error = _describe(exc)
            self._report(
                "logs.send_failed", events=len(batch), failed=self.failed, error=self.last_error
            )
        finally:
            with self._lock:
                self.queued_events -= len(batch)
                self.queued_bytes -= size

    def _put(self, batch: list[dict[str, Any]]) -> None:
        events = sorted(batch, key=lambda m: m["timestamp"])  # stable: keeps line order
        response = self.client.put_log_events(
            logGroupName=self.group, logStreamName=self.stream, logEvents=events
        )
        rejected = response.get("rejectedLogEventsInfo")
        if rejected:
            raise RuntimeError(f"events rejected: {rejected}")

    def _create_group_and_stream(self) -> None:
        """The first write found no stream (or no group): create them, idempotently."""
        try:
            self._create("create_log_group")
            log.info("logs.group_created", group=self.group, _local=True)
        except self.client.exceptions.ResourceAlreadyExistsException:
            pass
        except Exception as exc:
            if not self._group_explained:
                self._group_explained = True
                log.warning(
                    "logs.group_unavailable",
                    group=self.group,
                    error=_describe(exc),
                    why="the log group is missing and cannot be created: grant "
                    "logs:CreateLogGroup or create it beforehand",
                    _local=True,
                )
        with contextlib.suppress(self.client.exceptions.ResourceAlreadyExistsException):
            self._create("create_log_stream", logStreamName=self.stream)

    def _create(self, method: str, **kwargs: Any) -> None:
        getattr(self.client, method)(logGroupName=self.group, **kwargs)

    def _report(self, event: str, **fields: Any) -> None:
        """A warning on stdout only, at most once a minute per kind."""
        now = time.monotonic()
        if now - self._reported.get(event, -REPORT_EVERY) < REPORT_EVERY:
            return
        self._reported[event] = now
        log.warning(event, group=self.group, stream=self.stream, **fields, _local=True)

    # -- the end ------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Flush what is queued within ``timeout`` seconds, then report on stdout."""
        started = time.monotonic()
        closer = threading.Thread(target=self._handler.close, name="cloudwatch-close", daemon=True)
        closer.start()
        closer.join(max(timeout, 0.0))
        for thread in self._handler.threads:
            thread.join(max(timeout - (time.monotonic() - started), 0.0))
        with self._lock:
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


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def open_logs(group: str, stream: str) -> CloudWatchLogs | None:
    """A shipper for ``group``/``stream``; None (and one line why) if no client can be made.

    The SDK's own settings apply (region, credentials, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS);
    timeouts are short so a dead endpoint fails a batch in seconds, not minutes.
    """
    import boto3
    from botocore.config import Config

    try:
        client = boto3.session.Session().client(
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
            error=_describe(exc),
            why="no CloudWatch Logs client (set AWS_DEFAULT_REGION); logging to stdout only",
            _local=True,
        )
        return None
    return CloudWatchLogs(group, stream, client)
