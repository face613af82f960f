"""``checkpoints list`` and ``doctor`` for a group job: its group checkpoints and ranks."""

from __future__ import annotations

import json
from typing import Any

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.group import Group, GroupCheckpointsView, RankStore, group_size, label_of
from checkpoint.engine.store.base import Store
from checkpoint.errors import CheckpointError

from ..config import ConfigError, GroupSettings
from ..doctor_services import Check


def list_group(store: Store, job_id: str, as_json: bool) -> int | None:
    """Print the group checkpoints of ``job_id``; None when it is not a group job."""
    size = group_size(store, job_id)
    if size == 0:
        return None
    group = Group(store, job_id, size)
    rows: list[dict[str, Any]] = [
        {
            "group_checkpoint": r.sequence,
            "label": r.label,
            "created": r.created,
            "parts": list(r.parts),
            "writer": r.writer,
        }
        for r in group.records(newest_first=False)
    ]
    newest: list[int | None] = [max(rank.sequences(), default=None) for rank in group.ranks]
    if as_json:
        print(json.dumps({"ranks": size, "newest_parts": newest, "records": rows}, indent=2))
        return 0
    print(f"job {job_id}: a group of {size} ranks; newest part of each rank: {newest}")
    if not rows:
        print("no group checkpoint yet: no save point committed by every rank")
        return 0
    print(f"{'GROUP':>6}  {'CREATED':<24}  {'LABEL':<12}  PARTS (rank:sequence)")
    for r in rows:
        parts = " ".join(f"{rank}:{seq}" for rank, seq in enumerate(r["parts"]))
        print(f"{r['group_checkpoint']:>6}  {r['created']:<24}  {r['label']:<12}  {parts}")
    return 0


def group_view(job: JobStore) -> JobStore:
    """For ``show`` and ``restore``: a group job's group checkpoints (the union of each
    record's parts), else ``job`` itself."""
    size = group_size(job.store, job.job_id)
    return GroupCheckpointsView(job.store, job.job_id, size) if size else job


def timeline_job(job: JobStore, rank: int | None) -> JobStore:
    """For ``timeline``: a group job's attempts are each rank's own, so one rank's (its
    ``--rank``); any other job as it is. Raises ``ConfigError`` for a rank that does not fit."""
    size = group_size(job.store, job.job_id)
    if not size:
        if rank is not None:
            raise ConfigError("--rank", f"job {job.job_id} is not a group job: leave --rank out")
        return job
    if rank is None or not 0 <= rank < size:
        given = "" if rank is None else f", not {rank}"
        raise ConfigError(
            "--rank",
            f"job {job.job_id} is a group of {size} ranks, each with its own attempts: "
            f"give --rank 0 to {size - 1}{given}",
        )
    return RankStore(job.store, job.job_id, rank)


def check_group(settings: GroupSettings, store: Store | None, job_id: str) -> Check:
    """``doctor``: the group this node would run as, and what the store holds of it."""
    name = f"group rank {settings.rank} of {settings.size}"
    where = f"rank from {settings.rank_source}; restores {settings.restore}"
    if store is None:
        return Check(name, "skip", f"{where}; the store could not be read")
    if store.uri.startswith("file:"):
        return Check(
            name,
            "warn",
            f"{where}; a local store is one node's: the others cannot see its parts",
            "give every node the same s3://bucket/prefix",
        )
    try:
        stored = group_size(store, job_id)
        group = Group(store, job_id, settings.size)
        newest = next(group.records(), None) if stored else None
    except CheckpointError as exc:
        return Check(name, "FAIL", f"{where}; cannot read the group's records: {exc}")
    if stored > settings.size:
        return Check(
            name,
            "FAIL",
            f"{where}; the store holds parts of {stored} ranks for job {job_id}",
            "give the group's real size, or a new job id for a smaller group",
        )
    if newest is None:
        return Check(name, "ok", f"{where}; no group checkpoint stored yet (a fresh start)")
    part = group.part(settings.rank, newest.parts[settings.rank])
    return Check(
        name,
        "ok",
        f"{where}; would restore group checkpoint {newest.sequence} (label "
        f"{label_of(part)!s}, this rank's part {part.sequence})",
    )
