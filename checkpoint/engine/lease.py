"""Who is using a job's checkpoints right now: the running agent's lease, the operator's
sweeps.

An operator's ``checkpoints gc`` or ``delete`` and a running agent of the same job share
the store with no other channel between them, so they meet here, in two kinds of objects:

- **Leases** (``<job-id>/leases/<attempt>.json``): a running agent writes its lease at
  start and rewrites it every :attr:`LeasePolicy.renew_seconds`; it deletes it when it
  exits. A lease is live until ``ttl_seconds`` after the store last wrote it (the store's
  clock, read back as the object's modification time; an agent killed with ``kill -9``
  leaves one that expires). ``gc`` and ``delete`` refuse while a lease is live, unless
  forced.
- **Sweeps** (``<job-id>/sweeps/<time>-<id>.json``): a ``gc`` or ``delete`` forced past a
  live lease writes one before it deletes anything, waits :data:`SWEEP_SETTLE_SECONDS`
  (so that a commit already under way lands before the manifests are listed), and
  rewrites it as finished at the end. Before each commit an agent lists the sweeps; one it
  has not seen makes it check that every object the new manifest names is still in the
  store. A sweep still running, or an object gone, stops that commit (the objects gone are
  forgotten, so the next sync uploads them again): a sync never commits a checkpoint that
  restore would refuse.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import ManifestError, ObjectNotFound, StoreError
from .format.hashes import id_of_name
from .format.jobstore import JobStore, utc_iso
from .format.layout import BLOBS, PACKS

#: a forced sweep waits this long after announcing itself before it lists the manifests:
#: a commit that started before the announcement has landed by then and is seen
SWEEP_SETTLE_SECONDS = 5.0
#: a sweep that never finished (its ``gc`` was killed) counts as finished after this long
SWEEP_STALE = timedelta(hours=1)
#: the most a lease or sweep object may weigh when read back (they hold a few fields)
_MAX_BYTES = 64 << 10


@dataclass(frozen=True)
class LeasePolicy:
    renew_seconds: float = 60.0
    ttl_seconds: float = 180.0  # three renewals: one slow store call does not end a lease


@dataclass(frozen=True)
class Lease:
    attempt: int
    host: str
    renewed: datetime  # when the store last wrote it
    expires: datetime

    def describe(self, now: datetime) -> str:
        ago = max((now - self.renewed).total_seconds(), 0.0)
        left = max((self.expires - now).total_seconds(), 0.0)
        return (
            f"attempt {self.attempt} on {self.host or 'an unknown host'} "
            f"(lease renewed {ago:.0f}s ago, expires in {left:.0f}s)"
        )


def write_lease(job: JobStore, attempt: int, host: str, policy: LeasePolicy) -> None:
    body = {"attempt": attempt, "host": host, "ttl_seconds": policy.ttl_seconds}
    job.store.put_object(
        job.lease_key(attempt), json.dumps({**body, "renewed": utc_iso()}).encode()
    )


def drop_lease(job: JobStore, attempt: int) -> None:
    job.store.delete_objects([job.lease_key(attempt)])


def live_leases(job: JobStore, now: datetime | None = None) -> list[Lease]:
    """The leases of the job that have not expired, oldest attempt first. A lease that
    cannot be read counts as live for the default time: unknown is not "no agent"."""
    now = now or datetime.now(UTC)
    live = []
    for obj in job.store.list_objects(job.lease_folder):
        try:
            info = _read(job, obj.key)
        except ObjectNotFound:
            continue  # dropped while we listed: its agent has exited
        except ManifestError:
            info = {}  # unreadable: live for the default time, as if it said nothing
        ttl = info.get("ttl_seconds")
        ttl = float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else LeasePolicy.ttl_seconds
        expires = obj.modified + timedelta(seconds=ttl)
        if expires > now:
            attempt = info.get("attempt")
            host = info.get("host")
            live.append(
                Lease(
                    attempt if isinstance(attempt, int) else 0,
                    host if isinstance(host, str) else "",
                    obj.modified,
                    expires,
                )
            )
    return sorted(live, key=lambda lease: lease.attempt)


@dataclass(frozen=True)
class Sweep:
    key: str
    info: dict[str, Any]


def start_sweep(job: JobStore, by: str) -> Sweep:
    """Announce a forced ``gc``/``delete``; hand the result to :func:`finish_sweep`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    sweep = Sweep(
        job.sweep_key(f"{stamp}-{uuid.uuid4().hex[:12]}"), {"by": by, "started": utc_iso()}
    )
    job.store.put_object(sweep.key, json.dumps(sweep.info).encode())
    return sweep


def finish_sweep(job: JobStore, sweep: Sweep) -> None:
    job.store.put_object(sweep.key, json.dumps({**sweep.info, "finished": utc_iso()}).encode())


class SweepWatch:
    """An agent's side of the sweeps: which it has checked its manifest against."""

    def __init__(self) -> None:
        self._checked: set[str] = set()

    def gone(self, job: JobStore, names: Iterable[str]) -> set[str] | None:
        """Before a commit: None when no new sweep finished (nothing to check), else the
        object ids (blob hashes, pack ids, as chunks name them) among ``names`` that the
        store no longer has. Raises :class:`SweepRunning` while a sweep has not finished."""
        now = datetime.now(UTC)
        new = []
        for obj in job.store.list_objects(job.sweep_folder):
            if obj.key in self._checked:
                continue
            try:
                info = _read(job, obj.key)
            except ObjectNotFound:
                continue
            if not info.get("finished") and now - obj.modified < SWEEP_STALE:
                raise SweepRunning(f"a {info.get('by', 'gc')} of this job is running ({obj.key})")
            new.append(obj.key)
        if not new:
            return None
        stored = {
            id_of_name(o.key.rsplit("/", 1)[-1])
            for folder in (BLOBS, PACKS)
            for o in job.store.list_objects(job.folder(folder))
        }
        self._checked.update(new)
        return set(names) - stored


class SweepRunning(StoreError):
    """An operator's forced ``gc`` or ``delete`` of the job is deleting objects now."""


def _read(job: JobStore, key: str) -> dict[str, Any]:
    data = job.store.get_object(key, max_bytes=_MAX_BYTES)
    try:
        info = json.loads(data)
    except ValueError as exc:
        raise ManifestError(f"{key}: not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ManifestError(f"{key}: not a JSON object")
    return info
