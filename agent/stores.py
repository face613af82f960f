"""The configured store, and the jobs in it: open it, list its jobs, remove one.

The checkpoint package knows one job at a time (:class:`JobStore`); the whole-store view
(which jobs are there, how big) is built here from ``Store.list_objects``, on the layout
``<job-id>/{manifests,pages,blobs,packs,attempts,timeline}/...``.
"""

from __future__ import annotations

import difflib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.format.layout import GROUP, KINDS, MANIFESTS, RECORDS
from checkpoint.engine.format.manifest import Manifest
from checkpoint.engine.localdir.walk import Kind, walk
from checkpoint.engine.store.base import LocalStore, ObjectInfo, Store
from checkpoint.engine.store.uri import open_store
from checkpoint.errors import CheckpointError, StoreURIError

from .config import ConfigError, S3Settings

#: exit status of ``checkpoints`` when the job or checkpoint asked for is not there
EXIT_NOT_FOUND = 1
URI_SETTING = "--checkpoint-uri (SPOT_AGENT_CHECKPOINT_URI)"


class JobNotFound(CheckpointError):
    """The store holds nothing for this job id."""


def open_configured_store(settings: Any, setting: str = URI_SETTING, **client: Any) -> Store:
    """The store of ``settings`` (anything with ``checkpoint_uri`` and ``s3``); a bad URI
    or S3 option is a ConfigError naming the setting at fault. ``client`` options
    (``max_attempts``, timeouts) go to an S3 store as they are."""
    s3: S3Settings = settings.s3
    try:
        return open_store(settings.checkpoint_uri, **s3.store_options(), **client)
    except StoreURIError as exc:
        if exc.setting:  # another setting is at fault: name it, not the URI
            raise ConfigError(exc.setting, str(exc).removeprefix(f"{exc.setting}=")) from None
        raise ConfigError(setting, str(exc)) from None
    except ValueError as exc:
        raise ConfigError("--sse (SPOT_AGENT_SSE)", str(exc)) from None


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@dataclass
class JobSummary:
    job_id: str
    checkpoints: int = 0
    newest: int | None = None
    newest_at: datetime | None = None
    stored_bytes: int = 0
    objects: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "checkpoints": self.checkpoints,
            "newest": self.newest,
            "newest_at": self.newest_at.isoformat() if self.newest_at else None,
            "stored_bytes": self.stored_bytes,
            "objects": self.objects,
        }


def list_jobs(store: Store) -> list[JobSummary]:
    """Every job with at least one object in the store, by job id."""
    jobs: dict[str, JobSummary] = {}
    for obj in store.list_objects(""):
        job_id, _, rest = obj.key.partition("/")
        kind, _, name = rest.partition("/")
        if kind not in KINDS or not name:
            continue  # not ours
        job = jobs.setdefault(job_id, JobSummary(job_id))
        job.objects += 1
        job.stored_bytes += obj.size
        if kind == GROUP:  # a group job: its checkpoints are its group checkpoints
            kind, _, name = name.partition("/")
            kind = MANIFESTS if kind == RECORDS else kind
        stem = name.removesuffix(".json")
        if kind == MANIFESTS and stem.isdigit():
            job.checkpoints += 1
            if job.newest is None or int(stem) > job.newest:
                job.newest, job.newest_at = int(stem), obj.modified
    return sorted(jobs.values(), key=lambda j: j.job_id)


def require_job(job: JobStore) -> None:
    """Raise JobNotFound, naming the nearest job ids the store does hold, unless the store
    has anything for ``job``."""
    if next(iter(job.store.list_objects(job.prefix)), None) is not None:
        return
    known = [j.job_id for j in list_jobs(job.store)]
    if not known:
        raise JobNotFound(
            f"no job {job.job_id!r} in {job.store.uri}: the store holds no jobs at all "
            "(check --checkpoint-uri)"
        )
    near = difflib.get_close_matches(job.job_id, known, n=3, cutoff=0.5)
    hint = "nearest: " + ", ".join(near) if near else f"it holds: {', '.join(known[:5])}"
    more = f" (and {len(known) - 5} more)" if not near and len(known) > 5 else ""
    raise JobNotFound(f"no job {job.job_id!r} in {job.store.uri}; {hint}{more}")


def job_objects(job: JobStore) -> tuple[list[ObjectInfo], int]:
    """Every object of the job (partial ones of killed puts too), manifests first, and how
    many checkpoints it has."""
    found = list(job.store.list_objects(job.prefix)) + list(job.store.list_incomplete(job.prefix))

    def order(obj: ObjectInfo) -> int:
        kind = obj.key[len(job.prefix) :].split("/", 1)[0]
        return KINDS.index(kind) if kind in KINDS else len(KINDS)

    found.sort(key=order)
    checkpoints = sum(1 for o in found if o.key.startswith(job.folder(MANIFESTS)))
    return found, checkpoints


def delete_job(job: JobStore, objects: list[ObjectInfo]) -> None:
    """Delete the job's objects: manifests first, so that no reader ever finds a checkpoint
    whose blobs are already gone; then blobs, packs and attempt records."""
    manifests = [o.key for o in objects if o.key.startswith(job.folder(MANIFESTS))]
    job.store.delete_objects(manifests)
    job.store.delete_objects(o.key for o in objects if o.key not in set(manifests))
    if isinstance(job.store, LocalStore):
        _remove_empty_dirs(job.store.root / job.job_id)


def _remove_empty_dirs(top: Path) -> None:
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            continue  # not empty: something else lives there


def prune_to_manifest(directory: Path, manifest: Manifest) -> int:
    """Delete what ``directory`` holds beyond ``manifest`` (files, links, directories), so
    that it is exactly the checkpoint; the agent's reserved dir stays (the walk's rules,
    :mod:`checkpoint.engine.localdir.walk`). Returns how many entries were removed."""
    keep = {f.path for f in manifest.files} | {lk.path for lk in manifest.links}
    keep |= {h.path for h in manifest.hardlinks}
    keep_dirs = {d.path for d in manifest.dirs}
    for path in keep:
        parts = path.split("/")[:-1]
        keep_dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    # The top-most entries it lacks: the walk goes only into the directories it has.
    extra = [
        e
        for e in walk(directory, lstat=False, temporary=True, into=lambda d: d.rel in keep_dirs)
        if e.kind is not Kind.SKIPPED and e.rel not in (keep_dirs if e.kind is Kind.DIR else keep)
    ]
    removed = 0
    for e in extra:
        try:
            if e.kind is Kind.DIR:
                below = sum(len(d) + len(f) for _p, d, f in os.walk(e.path))
                shutil.rmtree(e.path)
                removed += 1 + below
            else:
                os.unlink(e.path)
                removed += 1
        except FileNotFoundError:
            continue  # vanished since the walk (it named it from the listing alone)
    return removed
