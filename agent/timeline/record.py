"""This attempt's timeline record: a small JSON object in the store, rewritten as it goes.

``<job-id>/timeline/<attempt>.json`` (the key is :meth:`JobStore.record_key`'s) holds where
the attempt ran, the restore it began with, its syncs, the interruption notice it got and
how it ended. It is rewritten at start, after the restore, after each sync, on a notice and
at the end, so an attempt killed with SIGKILL still shows what it committed.

One thread writes it, latest state wins: an update only changes the document in memory
and wakes the writer, so the run loop never waits on the store for it. Writing it never
fails the job: an error is logged once and the next update tries again; the last write
is bounded by the time the run has left.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from checkpoint.engine.format.jobstore import JobStore, utc_iso
from checkpoint.engine.format.manifest import Manifest
from checkpoint.engine.restore.restore import RestoreResult
from checkpoint.engine.save.sync import SyncResult

from .. import logs
from ..notices import Notice

log = logs.get_logger()

#: the record's format: a reader skips records newer than it knows
FORMAT = 1
#: the syncs that end a run (their start and length are drawn on the timeline)
FINAL_REASONS = ("exit", "interruption")


def iso(t: datetime | float) -> str:
    """UTC ISO 8601 with milliseconds, from an aware datetime or a Unix time."""
    if isinstance(t, float | int):
        t = datetime.fromtimestamp(t, UTC)
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def saved_at(manifest: Manifest) -> str | None:
    """When the job last wrote anything this checkpoint holds: its newest file's mtime.

    That is the job's own save time, whichever sync committed it; the work done after it
    is what an interruption can lose."""
    newest = max((f.mtime_ns for f in manifest.files), default=None)
    return None if newest is None else iso(newest / 1e9)


class AttemptRecord:
    """The record of one attempt; ``put`` writes its bytes (None: keep it in memory only)."""

    def __init__(self, attempt: int, put: Callable[[bytes], None] | None, **fields: Any) -> None:
        self.doc: dict[str, Any] = {
            "format": FORMAT,
            "attempt": attempt,
            "started": utc_iso(),
            **{k: v for k, v in fields.items() if v is not None},
            "syncs": {"count": 0, "commits": 0, "seconds": 0.0, "bytes_uploaded": 0, "failed": 0},
        }
        self._put = put
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._version = 0  # bumped by each update
        self._written = 0  # the version the store has
        self._done = threading.Condition(self._lock)
        self._failed_once = False
        self._manifest: Manifest | None = None  # the last commit's, for its save time
        self._thread: threading.Thread | None = None
        self._changed()

    @classmethod
    def in_store(cls, job: JobStore, attempt: int, **fields: Any) -> AttemptRecord:
        key = job.record_key(attempt)
        return cls(attempt, lambda body: job.store.put_object(key, body), **fields)

    # -- what the run tells it (on the loop thread: cheap, never raises) -----------------

    def identity(self, fields: Mapping[str, Any]) -> None:
        self.update(instance={k: v for k, v in fields.items() if v is not None})

    def restored(self, r: RestoreResult, ended: float) -> None:
        m = r.manifest
        self.update(
            restore={
                "sequence": m.sequence if m else None,
                "ended": iso(ended),
                "seconds": round(r.seconds, 3),
                "bytes_downloaded": r.bytes_downloaded,
                "bytes_kept": max(m.size - r.bytes_downloaded, 0) if m else 0,
                "files_downloaded": r.files_written,
                "files_kept": r.files_kept,
                "saved_at": saved_at(m) if m else None,
            },
            job_started=iso(ended),
        )

    def synced(self, r: SyncResult, started: float, base: Manifest | None) -> None:
        with self._lock:
            syncs = self.doc["syncs"]
            syncs["count"] += 1
            syncs["seconds"] = round(syncs["seconds"] + r.seconds, 3)
            syncs["bytes_uploaded"] += r.bytes_uploaded
            if r.sequence is not None:
                syncs["commits"] += 1
                self.doc["last_commit"] = {
                    "sequence": r.sequence,
                    "at": iso(started + r.seconds),
                    "reason": r.reason,
                }
                self._manifest = base if base is not None and base.sequence == r.sequence else None
            if r.reason in FINAL_REASONS:
                self.doc["final_sync"] = {
                    "started": iso(started),
                    "seconds": round(r.seconds, 3),
                    "sequence": r.sequence,
                }
        self._changed()

    def sync_failed(self) -> None:
        with self._lock:
            self.doc["syncs"]["failed"] += 1
        self._changed()

    def interrupted(self, notice: Notice) -> None:
        """The notice acted on; a later, more urgent one only moves the deadline."""
        with self._lock:
            first = self.doc.get("notice")
            if first is not None:
                first["deadline"] = iso(notice.deadline) if notice.deadline else first["deadline"]
        if first is not None:
            self._changed()
            return
        self.update(
            notice={
                "source": notice.source,
                "action": notice.action,
                "received": iso(notice.received),
                "deadline": iso(notice.deadline) if notice.deadline else None,
            }
        )

    def continued(self, job_id: str, queue: str, because: str) -> None:
        self.update(continuation={"job_id": job_id, "queue": queue, "because": because})

    def ended(self, end: str, exit_code: int) -> None:
        self._fill_saved_at()
        self.update(ended=utc_iso(), end=end, exit_code=exit_code)

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.doc.update(fields)
        self._changed()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(self.doc))
        return copy

    # -- the writer ----------------------------------------------------------------------

    def _changed(self) -> None:
        with self._lock:
            self._version += 1
        if self._put is None:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, name="record", daemon=True)
            self._thread.start()
        self._wake.set()

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._write_once()

    def settle(self) -> None:
        """Work out what the writer would before reading the record here (at the end)."""
        self._fill_saved_at()

    def _fill_saved_at(self) -> None:
        """The last commit's save time: a walk of its file list, so never on the loop
        thread while the job runs (the writer does it; ``settle`` and ``ended`` once, at
        the end)."""
        with self._lock:
            manifest, self._manifest = self._manifest, None
        if manifest is None:
            return
        at = saved_at(manifest)
        with self._lock:
            commit = self.doc.get("last_commit") or {}
            if commit.get("sequence") == manifest.sequence:
                commit["saved_at"] = at

    def _write_once(self) -> None:
        assert self._put is not None
        with self._lock:
            version = self._version
        self._fill_saved_at()
        with self._lock:
            self.doc["updated"] = utc_iso()
            body = json.dumps(self.doc, separators=(",", ":")).encode()
        try:
            self._put(body)
        except Exception as exc:  # a record is never worth failing or stalling the job for
            if not self._failed_once:
                self._failed_once = True
                log.warning("timeline.record_failed", error=str(exc), error_type=type(exc).__name__)
            return
        with self._done:
            self._written = max(self._written, version)
            self._done.notify_all()

    def close(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until the store has the latest state: True if so."""
        if self._put is None or self._thread is None:
            return True
        self._wake.set()
        with self._done:
            return self._done.wait_for(lambda: self._written >= self._version, timeout)
