"""A job's timeline, from the store alone: one entry per attempt, and the totals.

It reads the attempts' claim records (``attempts/<n>.json``, written by every agent) and
their timeline records (``timeline/<n>.json``, see :mod:`.record`); an attempt with only a
claim record (an older agent's) shows its start and host. No log group and no running agent
are needed.

How an attempt ended: ``exited`` (the job's code, or the agent's), ``interrupted`` (a notice
stopped it and the agent exited), ``cut_short`` (no end was written and a newer attempt
exists: the machine went away, or the agent was killed), ``running`` (the newest attempt,
no end yet).

Work lost to an interruption is the time between the job's last save that was committed
(the newest file time of the attempt's last commit, or the job's start when it committed
nothing) and the notice. For an attempt cut short it is counted up to the last time the
agent was heard from: a lower bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.errors import CheckpointError

from .record import FORMAT

#: the largest record the reader takes (they are a few hundred bytes)
MAX_RECORD_BYTES = 1 << 16
ENDS = ("exited", "interrupted", "cut_short", "running")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def seconds_between(a: Any, b: Any) -> float | None:
    ta, tb = parse_time(a), parse_time(b)
    return None if ta is None or tb is None else round((tb - ta).total_seconds(), 3)


@dataclass
class Attempt:
    attempt: int
    claim: dict[str, Any]
    record: dict[str, Any]
    end: str = "running"
    unreadable: str | None = None

    @property
    def started(self) -> str | None:
        value = self.record.get("started") or self.claim.get("started")
        return value if isinstance(value, str) else None

    @property
    def ended(self) -> str | None:
        value = self.record.get("ended")
        return value if isinstance(value, str) else None

    @property
    def last_heard(self) -> str | None:
        """The end, or else the last time the agent wrote its record."""
        value = self.ended or self.record.get("updated") or self.started
        return value if isinstance(value, str) else None

    @property
    def notice(self) -> dict[str, Any] | None:
        n = self.record.get("notice")
        return n if isinstance(n, dict) else None

    @property
    def interrupted(self) -> bool:
        return self.end == "interrupted" or self.notice is not None

    def _section(self, name: str) -> dict[str, Any]:
        value = self.record.get(name)
        return value if isinstance(value, dict) else {}

    def job_end(self) -> str | None:
        """When the job stopped running: the final sync's start, else the last heard."""
        final = self._section("final_sync").get("started")
        return final if isinstance(final, str) else self.last_heard

    def work_lost(self) -> float | None:
        """Seconds of the job's work that the next attempt has to do again."""
        if not self.interrupted and self.end != "cut_short":
            return None
        job_started = self.record.get("job_started")
        if job_started is None:
            return 0.0  # the job had not started: nothing was done, nothing lost
        saved = self._section("last_commit").get("saved_at")
        since = max(
            (t for t in (parse_time(job_started), parse_time(saved)) if t is not None),
            default=None,
        )
        notice = self.notice
        until = parse_time(notice.get("received") if notice else self.last_heard)
        if since is None or until is None:
            return None
        return round(max((until - since).total_seconds(), 0.0), 3)

    def notice_to_committed(self) -> float | None:
        final, notice = self._section("final_sync"), self.notice
        if notice is None or not isinstance(final.get("started"), str):
            return None
        took = seconds_between(notice.get("received"), final["started"])
        return None if took is None else round(took + float(final.get("seconds") or 0.0), 3)

    def figures(self) -> dict[str, float]:
        """This attempt's time, split so that the parts add up to ``seconds``."""
        total = seconds_between(self.started, self.last_heard) or 0.0
        restore = float(self._section("restore").get("seconds") or 0.0)
        job = seconds_between(self.record.get("job_started"), self.job_end()) or 0.0
        final = float(self._section("final_sync").get("seconds") or 0.0)
        other = round(max(total - restore - job - final, 0.0), 3)
        return {
            "seconds": round(total, 3),
            "restore_seconds": round(restore, 3),
            "job_seconds": round(job, 3),
            "final_sync_seconds": round(final, 3),
            "other_seconds": other,
        }

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        notice = dict(self.notice) if self.notice else None
        if notice is not None:
            notice["notice_to_committed_seconds"] = self.notice_to_committed()
        batch = self._section("batch")
        out: dict[str, Any] = {
            "attempt": self.attempt,
            "started": self.started,
            "ended": self.ended,
            "end": self.end,
            "exit_code": r.get("exit_code"),
            "last_heard": self.last_heard,
            "host": r.get("host") or self.claim.get("host"),
            "batch_job_id": batch.get("job_id"),
            "batch_attempt": batch.get("attempt", self.claim.get("batch_attempt")),
            "batch_job_queue": batch.get("queue"),
            "instance": r.get("instance") or {},
            "continued_because": r.get("continued_because"),
            "continues_from": r.get("continues_from"),
            "restore": r.get("restore"),
            "job_started": r.get("job_started"),
            "syncs": r.get("syncs") or {},
            "last_commit": r.get("last_commit"),
            "final_sync": r.get("final_sync"),
            "notice": notice,
            "work_lost_seconds": self.work_lost(),
            "continuation": r.get("continuation"),
            **self.figures(),
        }
        if self.unreadable:
            out["unreadable"] = self.unreadable
        return out


@dataclass
class Timeline:
    job_id: str
    attempts: list[Attempt] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        views = [a.as_dict() for a in self.attempts]
        wall = seconds_between(self.attempts[0].started, self.attempts[-1].last_heard) or 0.0
        spent = sum(v["seconds"] for v in views)
        lost = sum(v["work_lost_seconds"] or 0.0 for v in views)
        job = sum(v["job_seconds"] for v in views)
        useful = max(job - lost, 0.0)
        return {
            "attempts": len(views),
            "interruptions": sum(1 for a in self.attempts if a.interrupted),
            "cut_short": sum(1 for a in self.attempts if a.end == "cut_short"),
            "wall_seconds": round(wall, 3),
            "attempt_seconds": round(spent, 3),
            "between_attempts_seconds": round(max(wall - spent, 0.0), 3),
            "restore_seconds": round(sum(v["restore_seconds"] for v in views), 3),
            "job_seconds": round(job, 3),
            "final_sync_seconds": round(sum(v["final_sync_seconds"] for v in views), 3),
            "sync_seconds": round(sum(float(v["syncs"].get("seconds", 0)) for v in views), 3),
            "bytes_uploaded": sum(int(v["syncs"].get("bytes_uploaded", 0)) for v in views),
            "bytes_downloaded": sum(
                int((v["restore"] or {}).get("bytes_downloaded", 0)) for v in views
            ),
            "work_lost_seconds": round(lost, 3),
            "useful_seconds": round(useful, 3),
            "useful_share": round(useful / wall, 4) if wall > 0 else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "attempts": [a.as_dict() for a in self.attempts],
            "totals": self.totals(),
        }


def _read(job: JobStore, key: str) -> dict[str, Any]:
    doc = json.loads(job.store.get_object(key, max_bytes=MAX_RECORD_BYTES))
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def load_timeline(job: JobStore) -> Timeline:
    """Every attempt of ``job`` the store knows, oldest first."""
    claimed, recorded = job.attempts(), job.recorded_attempts()
    numbers = sorted(set(claimed) | set(recorded))
    timeline = Timeline(job.job_id)
    for n in numbers:
        a = Attempt(n, {}, {})
        try:
            if n in claimed:
                a.claim = _read(job, job.attempt_key(n))
            if n in recorded:
                record = _read(job, job.record_key(n))
                if int(record.get("format", 0)) > FORMAT:
                    raise ValueError(f"record format {record.get('format')} is newer than {FORMAT}")
                a.record = record
        except (CheckpointError, ValueError) as exc:
            a.unreadable = str(exc)
        timeline.attempts.append(a)
    for i, a in enumerate(timeline.attempts):
        end = a.record.get("end")
        if end in ("exited", "interrupted"):
            a.end = str(end)
        else:
            a.end = "cut_short" if i < len(timeline.attempts) - 1 else "running"
    return timeline


def past_interruptions(job: JobStore, before: int) -> int:
    """Interruptions of attempts older than ``before`` (for the interruption budget)."""
    timeline = load_timeline(job)
    return sum(1 for a in timeline.attempts if a.attempt < before and a.interrupted)
