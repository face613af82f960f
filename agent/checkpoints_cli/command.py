"""``spot-agent checkpoints``: its verbs and options, opening the store, dispatching each
verb, and the exit status of the errors they share."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from checkpoint.engine.format.jobstore import JobStore
from checkpoint.errors import CheckpointError, StoreError

from .. import exits
from ..config import (
    RUN_OPTIONS,
    S3_OPTIONS,
    STORE_OPTIONS,
    TRANSFER_OPTIONS,
    ConfigError,
    add_options,
    load_store_settings,
)
from ..config.option import resolve
from ..group.listing import group_view, list_group, timeline_job
from ..live_job import unless_live
from ..stores import EXIT_NOT_FOUND, open_configured_store, require_job
from . import cleanup, restore, views

#: the options that shape the agent's events, as ``run`` has them
LOG_OPTIONS = tuple(
    next(o for o in RUN_OPTIONS if o.flag == flag) for flag in ("--log-format", "--log-level")
)

EPILOG = """\
The result is printed on stdout; the agent's events on the way (a store's retries, a
restore's progress) go to stderr, shaped by SPOT_AGENT_LOG_FORMAT and SPOT_AGENT_LOG_LEVEL
(see `spot-agent run --help`).

exit status:
  0   done
  1   no such job (the nearest job ids are named) or checkpoint, or a damaged checkpoint
  2   a usage or configuration error
  69  the checkpoint store cannot be reached or read
  141 stdout's reader left early (| head): the output ends quietly, as other commands'
"""


def log_to_stderr(environ: Mapping[str, str]) -> None:
    """What these commands print is their result, on stdout, and ``--json`` is read by
    scripts: the engine's events on the way (a retry, a key ignored, a restore's progress)
    go to stderr, in the format and at the level of ``SPOT_AGENT_LOG_FORMAT`` and
    ``SPOT_AGENT_LOG_LEVEL``, as ``run``'s go to stdout (structlog's default is stdout)."""
    from .. import logs

    given = argparse.Namespace()  # the environment's values: these commands have no flags
    fmt, level = (resolve(opt, given, environ) for opt in LOG_OPTIONS)
    color = not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"
    logs.configure(sys.stderr, fmt=fmt, level=level, color=color)


def add_arguments(ck: argparse.ArgumentParser) -> None:
    ck.epilog = EPILOG
    ck.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = ck.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="a job's checkpoints: sequence, time, size, files")
    show = sub.add_parser("show", help="one checkpoint's files and metadata")
    show.add_argument("sequence", nargs="?", type=int, help="default: the newest")
    rst = sub.add_parser("restore", help="restore a checkpoint into a directory")
    rst.add_argument("sequence", nargs="?", type=int, help="default: the newest intact one")
    rst.add_argument("--to", required=True, metavar="DIR", help="directory to restore into")
    rst.add_argument(
        "--force",
        action="store_true",
        help="restore into a non-empty DIR and make it exactly the checkpoint: files and "
        "directories the checkpoint does not have are deleted (the agent's own .spot-agent/ "
        "dir is kept)",
    )
    gc = sub.add_parser(
        "gc",
        help="delete stored data no checkpoint references (and, with --keep, old checkpoints)",
        description="Delete blobs that no checkpoint of the job references and that are older "
        "than --min-age (so a sync in progress is never harmed). With --keep N, first delete "
        "all but the N newest checkpoints. With --no-agent-running, nothing can be in "
        "progress: unreferenced data is deleted at once.",
    )
    gc.add_argument("--keep", type=int, metavar="N", help="keep only the N newest checkpoints")
    gc.add_argument(
        "--min-age",
        metavar="DURATION",
        help="only delete blobs older than this [default: 24h; 0 with --no-agent-running]",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would be deleted")
    gc.add_argument(
        "--no-agent-running",
        action="store_true",
        help="no agent of this job is running: free space at once (allows any --min-age); "
        "refused while an agent's lease says otherwise, unless --force",
    )
    gc.add_argument(
        "--force",
        action="store_true",
        help="go on while an agent of the job holds a live lease (it is running): the "
        "agent checks its next checkpoint and uploads again what gc deleted",
    )
    tl = sub.add_parser(
        "timeline",
        help="what happened to a job: its attempts, interruptions and the work they cost",
        description="Each attempt of the job, from the store alone: start and end, where it "
        "ran, how it ended, the restore it began with, its syncs, and for an interruption "
        "the notice, the deadline, the time to the final commit and the work lost (from the "
        "last committed save to the notice). Then totals: wall time, time restoring and "
        "syncing, work lost, and the share of the time that was useful.",
    )
    tl.add_argument("--json", action="store_true", help="print JSON")
    tl.add_argument("--svg", metavar="FILE", help="also write the timeline as an SVG picture")
    tl.add_argument(
        "--rank",
        type=int,
        metavar="R",
        help="a group job's (docs/groups.md): the attempts of rank R, each rank has its own",
    )
    jobs = sub.add_parser(
        "jobs", help="the job ids in the store, with their newest checkpoint and stored size"
    )
    jobs.add_argument("--json", action="store_true", help="print JSON")
    delete = sub.add_parser(
        "delete",
        help="remove a finished job entirely (every checkpoint, blob and attempt record)",
        description="Remove everything the store holds for one job. Only for a job that is "
        "finished: refused while an agent of the job holds a live lease, unless --force. "
        "Asks for confirmation at a terminal; elsewhere give --yes.",
    )
    delete.add_argument("--job-id", required=True, metavar="ID", help="the job to delete")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.add_argument(
        "--force",
        action="store_true",
        help="delete while an agent of the job is running (its next checkpoints upload "
        "everything again)",
    )
    uri_option = tuple(o for o in RUN_OPTIONS if o.flag == "--checkpoint-uri")
    add_options(jobs, uri_option + S3_OPTIONS)
    add_options(delete, uri_option + S3_OPTIONS)
    for p in (lst, show, rst, gc, tl):
        add_options(p, STORE_OPTIONS)
    add_options(rst, TRANSFER_OPTIONS)
    for p in (lst, show):
        p.add_argument("--json", action="store_true", help="print JSON")


def main(args: argparse.Namespace) -> int:
    log_to_stderr(os.environ)
    ss = load_store_settings(args, os.environ)
    if args.action not in ("jobs", "delete") and not ss.job_id:
        raise ConfigError("--job-id (SPOT_AGENT_JOB_ID)", "which job? give --job-id")
    if args.action == "restore":
        restore.check_target(Path(args.to), args.force)
    store = open_configured_store(ss)
    try:
        if args.action == "jobs":
            return views.jobs(store, args.json)
        job = JobStore(store, args.job_id if args.action == "delete" else str(ss.job_id))
        require_job(job)
        if args.action in ("show", "restore"):
            job = group_view(job)  # a group job: its group checkpoints, every rank's files
        if args.action == "list":
            grouped = list_group(store, job.job_id, args.json)
            return views.list_checkpoints(job, args.json) if grouped is None else grouped
        if args.action == "show":
            return views.show(job, args.sequence, args.json)
        if args.action == "gc":
            with unless_live(job, "gc", force=args.force, dry_run=args.dry_run):
                return cleanup.gc(job, args)
        if args.action == "timeline":
            return views.timeline(timeline_job(job, args.rank), args.json, args.svg)
        if args.action == "delete":
            with unless_live(job, "delete", force=args.force) as sweep:
                return cleanup.delete(job, args.yes, keep=sweep)
        return restore.restore(
            job, args.sequence, Path(args.to), args.force, ss.max_bytes_in_flight
        )
    except StoreError as exc:
        print(f"spot-agent: {exc}", file=sys.stderr)
        return exits.STORE_UNAVAILABLE
    except CheckpointError as exc:
        print(f"spot-agent: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    finally:
        store.close()
