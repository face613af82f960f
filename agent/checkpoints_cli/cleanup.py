"""``checkpoints gc`` and ``delete``: freeing a store's space, old checkpoints and
unreferenced data, or a finished job entirely (the live-lease check is the caller's)."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.gc import collect_garbage, prune_manifests
from checkpoint.engine.save.known import UPLOAD_TRUST_SECONDS

from ..config import ConfigError, parse_duration
from ..stores import EXIT_NOT_FOUND, delete_job, human_size, job_objects


def gc(job: JobStore, args: argparse.Namespace) -> int:
    raw_age = args.min_age or ("0s" if args.no_agent_running else "24h")
    try:
        min_age = timedelta(seconds=parse_duration(raw_age))
    except ValueError as exc:
        raise ConfigError("--min-age", str(exc)) from None
    if min_age.total_seconds() < UPLOAD_TRUST_SECONDS and not args.no_agent_running:
        raise ConfigError(
            "--min-age",
            f"must be at least {UPLOAD_TRUST_SECONDS / 3600:g}h while an agent of the job may "
            "be running (its latest uploads are not referenced yet); add --no-agent-running "
            "if none is",
        )
    if args.keep is not None and args.keep < 1:
        raise ConfigError("--keep", f"must be at least 1, got {args.keep}")
    pruned: list[int] = []
    if args.keep is not None and args.dry_run:
        pruned = job.sequences()[: -args.keep]
    elif args.keep is not None:  # never the newest checkpoint that loads, even if older
        pruned = prune_manifests(job, args.keep)
    r = collect_garbage(job, min_age=min_age, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {len(pruned)} old checkpoints and {r.deleted} unreferenced blobs "
        f"({human_size(r.bytes_deleted)}) and {r.packs_deleted} unreferenced packs "
        f"({human_size(r.pack_bytes_deleted)}); kept {r.manifests} checkpoints, {r.referenced} "
        f"referenced blobs, {r.packs_referenced} referenced packs, {r.kept_young} unreferenced "
        f"blobs and {r.packs_kept_young} packs younger than {raw_age}"
        + (
            f"; {verb} {r.pages_deleted} unreferenced manifest pages, kept {r.pages_referenced}"
            if r.pages
            else ""
        )
    )
    return 0


def delete(job: JobStore, yes: bool, keep: str | None = None) -> int:
    """``keep``: the key of the sweep that tells a running agent (see agent.live_job)."""
    objects, checkpoints = job_objects(job)
    objects = [o for o in objects if o.key != keep]
    size = human_size(sum(o.size for o in objects))
    what = f"job {job.job_id} in {job.store.uri}: {checkpoints} checkpoints, {len(objects)} objects"
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                "--yes", f"deleting {what} ({size}) needs confirmation: add --yes (no terminal)"
            )
        answer = input(f"delete {what} ({size})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_NOT_FOUND
    delete_job(job, objects)
    print(f"deleted {what} ({size})")
    return 0
