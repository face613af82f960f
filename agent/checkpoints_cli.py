"""``spot-agent checkpoints ...``: inspect, restore and clean up what a store holds.

``list``, ``show``, ``restore``, ``gc`` and ``timeline`` work on one job; ``jobs`` lists
the jobs in a store; ``delete`` removes a finished job entirely. A job id the store does not
know is an error that names the nearest ones it does (a typo must not read as "no
checkpoints").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from checkpoint.engine.format import whole
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.gc import collect_garbage, prune_manifests
from checkpoint.engine.group import GroupCheckpointsView
from checkpoint.engine.save.known import UPLOAD_TRUST_SECONDS
from checkpoint.errors import CheckpointError, StoreError

from . import exits
from .config import (
    RUN_OPTIONS,
    S3_OPTIONS,
    STORE_OPTIONS,
    TRANSFER_OPTIONS,
    ConfigError,
    add_options,
    load_store_settings,
    parse_duration,
)
from .group.listing import group_view, list_group, timeline_job
from .live_job import unless_live
from .stores import (
    EXIT_NOT_FOUND,
    delete_job,
    human_size,
    job_objects,
    list_jobs,
    open_configured_store,
    prune_to_manifest,
    require_job,
)

EPILOG = """\
exit status:
  0   done
  1   no such job (the nearest job ids are named) or checkpoint, or a damaged checkpoint
  2   a usage or configuration error
  69  the checkpoint store cannot be reached or read
  141 stdout's reader left early (| head): the output ends quietly, as other commands'
"""


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
        "directories the checkpoint does not have are deleted",
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
    ss = load_store_settings(args, os.environ)
    if args.action not in ("jobs", "delete") and not ss.job_id:
        raise ConfigError("--job-id (SPOT_AGENT_JOB_ID)", "which job? give --job-id")
    if args.action == "restore":
        _check_target(Path(args.to), args.force)
    store = open_configured_store(ss)
    try:
        if args.action == "jobs":
            return _jobs(store, args.json)
        job = JobStore(store, args.job_id if args.action == "delete" else str(ss.job_id))
        require_job(job)
        if args.action in ("show", "restore"):
            job = group_view(job)  # a group job: its group checkpoints, every rank's files
        if args.action == "list":
            grouped = list_group(store, job.job_id, args.json)
            return _list(job, args.json) if grouped is None else grouped
        if args.action == "show":
            return _show(job, args.sequence, args.json)
        if args.action == "gc":
            with unless_live(job, "gc", force=args.force, dry_run=args.dry_run):
                return _gc(job, args)
        if args.action == "timeline":
            return _timeline(timeline_job(job, args.rank), args.json, args.svg)
        if args.action == "delete":
            with unless_live(job, "delete", force=args.force) as sweep:
                return _delete(job, args.yes, keep=sweep)
        return _restore(job, args.sequence, Path(args.to), args.force, ss.max_bytes_in_flight)
    except StoreError as exc:
        print(f"spot-agent: {exc}", file=sys.stderr)
        return exits.STORE_UNAVAILABLE
    except CheckpointError as exc:
        print(f"spot-agent: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    finally:
        store.close()


def _jobs(store: Any, as_json: bool) -> int:
    found = list_jobs(store)
    if as_json:
        print(json.dumps([j.as_dict() for j in found], indent=2))
        return 0
    if not found:
        print(f"no jobs in {store.uri}")
        return 0
    print(f"{'JOB':<40}  {'CHECKPOINTS':>11}  {'NEWEST':>6}  {'NEWEST AT':<20}  {'STORED':>10}")
    for j in found:
        newest = "-" if j.newest is None else str(j.newest)
        at = j.newest_at.strftime("%Y-%m-%d %H:%M:%S") if j.newest_at else "-"
        print(
            f"{j.job_id:<40}  {j.checkpoints:>11}  {newest:>6}  {at:<20}  "
            f"{human_size(j.stored_bytes):>10}"
        )
    return 0


def _list(job: JobStore, as_json: bool) -> int:
    rows: list[dict[str, Any]] = []
    for seq in job.sequences():
        try:
            m = job.load_manifest(seq)
        except CheckpointError as exc:
            rows.append({"sequence": seq, "error": str(exc)})
            continue
        rows.append(
            {
                "sequence": seq,
                "created": m.created,
                "attempt": m.attempt,
                "reason": m.reason,
                "files": len(m.files),
                "bytes": m.size,
                "progress": m.progress,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no checkpoints for job {job.job_id} in {job.store.uri}")
        return 0
    print(
        f"{'SEQ':>6}  {'CREATED':<24}  {'ATTEMPT':>7}  {'REASON':<12}  {'FILES':>6}  "
        f"{'SIZE':>10}  PROGRESS"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['sequence']:>6}  DAMAGED: {r['error']}")
            continue
        progress = " ".join(f"{k}={v}" for k, v in r["progress"].items())
        print(
            f"{r['sequence']:>6}  {r['created']:<24}  {r['attempt']:>7}  {r['reason']:<12}  "
            f"{r['files']:>6}  {human_size(r['bytes']):>10}  {progress}"
        )
    return 0


def _show(job: JobStore, sequence: int | None, as_json: bool) -> int:
    seqs = job.sequences()
    if not seqs:
        print(f"no checkpoints for job {job.job_id} in {job.store.uri}", file=sys.stderr)
        return EXIT_NOT_FOUND
    seq = seqs[-1] if sequence is None else sequence
    if seq not in seqs:
        print(_no_checkpoint(job, seq, seqs), file=sys.stderr)
        return EXIT_NOT_FOUND
    m = job.load_manifest(seq)
    # A group checkpoint is no stored manifest: the union of its parts, as restore sees it.
    grouped = isinstance(job, GroupCheckpointsView)
    raw = whole.encode(m) if grouped else job.store.get_object(job.manifest_key(seq))
    if as_json:
        doc = json.loads(raw)
        if m.pages:  # a paged manifest (format 4): each page's entries after its listing
            for listed in doc["pages"]:
                listed["page"] = json.loads(job.store.get_object(job.page_key(listed["id"])))
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"checkpoint {m.sequence} of job {m.job_id}: {m.created}, attempt {m.attempt}, "
        f"reason {m.reason}, {len(m.files)} files, {human_size(m.size)}, "
        f"{len(m.blob_hashes())} distinct chunks"
    )
    if m.progress:
        print("progress: " + " ".join(f"{k}={v}" for k, v in m.progress.items()))
    for f in m.files:
        print(f"  {f.mode:04o} {f.size:>14,d}  {f.path}")
    for lk in m.links:
        print(f"  link {'':>14}  {lk.path} -> {lk.target}")
    return 0


def _timeline(job: JobStore, as_json: bool, svg_file: str | None) -> int:
    from .timeline import model, render, svg

    doc = model.load_timeline(job).as_dict()
    if svg_file:
        try:
            Path(svg_file).write_text(svg.svg(doc))
        except OSError as exc:
            raise ConfigError("--svg", f"cannot write {svg_file}: {exc.strerror}") from None
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        print(render.table(doc))
    return 0


def _no_checkpoint(job: JobStore, seq: int, seqs: list[int]) -> str:
    """The one line for a sequence the job does not have: pruned, or never committed."""
    if not seqs:
        return f"spot-agent: no checkpoints for job {job.job_id} in {job.store.uri}"
    held = f"{seqs[0]}..{seqs[-1]}" if len(seqs) > 1 else str(seqs[0])
    if 0 < seq < seqs[-1]:  # sequences are committed in order: a gap was there once
        return f"spot-agent: checkpoint {seq} of job {job.job_id} was pruned (it has {held})"
    return f"spot-agent: job {job.job_id} has no checkpoint {seq} (it has {held})"


def _gc(job: JobStore, args: argparse.Namespace) -> int:
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


def _delete(job: JobStore, yes: bool, keep: str | None = None) -> int:
    """``keep``: the key of the sweep that tells a running agent (see .live_job)."""
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


def _check_target(to: Path, force: bool) -> None:
    if to.exists() and not to.is_dir():
        raise ConfigError("--to", f"{to} exists and is not a directory")
    if not force and to.is_dir() and any(to.iterdir()):
        raise ConfigError(
            "--to",
            f"{to} is not empty: restore into an empty or new directory, or add --force to "
            "make it exactly the checkpoint (what the checkpoint does not have is deleted)",
        )


class ProgressLine:
    """``restore.progress`` for a person: one line redrawn in place at a terminal, a line
    per report otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False

    def __call__(self, _event: str, f: dict[str, Any]) -> None:
        eta = f"{f['eta_seconds']:.0f} s left" if f["eta_seconds"] is not None else ""
        line = (
            f"restoring: {human_size(f['bytes_done'])} of {human_size(f['bytes_total'])} "
            f"({f['percent']:.0f}%), {human_size(f['rate_bytes_per_second'])}/s, {eta}"
        )
        self.stream.write(f"\r{line}\x1b[K" if self.tty else f"{line}\n")
        self.stream.flush()
        self.drawn = self.tty

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _restore(
    job: JobStore, sequence: int | None, to: Path, force: bool, max_bytes_in_flight: int
) -> int:
    from checkpoint.engine.checkpointer import Checkpointer

    if sequence is not None:
        seqs = job.sequences()
        if sequence not in seqs:
            print(_no_checkpoint(job, sequence, seqs), file=sys.stderr)
            return EXIT_NOT_FOUND
    shown = ProgressLine(sys.stderr)
    ckpt = Checkpointer(job, to, progress=shown, max_bytes_in_flight=max_bytes_in_flight)
    try:
        r = ckpt.restore(sequence)
    finally:
        ckpt.close()
        shown.end()
    for seq, why in r.skipped:
        print(f"spot-agent: checkpoint {seq} is damaged, skipped: {why}", file=sys.stderr)
    if r.manifest is None:
        print(f"spot-agent: no intact checkpoint for job {job.job_id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    removed = prune_to_manifest(to, r.manifest) if force else 0
    print(
        f"restored checkpoint {r.manifest.sequence} into {to}: {r.files_written} files "
        f"downloaded, {r.files_kept} already present, {human_size(r.bytes_downloaded)} "
        f"in {r.seconds:.2f}s" + (f"; removed {removed} entries not in it" if force else "")
    )
    return 0
