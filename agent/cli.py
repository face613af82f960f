"""The command line: ``spot-agent run``, ``checkpoints``, ``imds-mock``, ``--version``."""

from __future__ import annotations

# ruff: noqa: E402 - the console script imports this module: keep an early SIGTERM first
import sys

from . import early

early.install(sys.argv)

import argparse
import json
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from checkpoint.errors import CheckpointError, StoreError, StoreURIError
from checkpoint.gc import collect_garbage
from checkpoint.store import Store, open_store
from checkpoint.sync import UPLOAD_TRUST_SECONDS, Checkpointer, JobStore

from . import __version__, batch, cloudwatch, imds_mock, logs
from .config import (
    RUN_OPTIONS,
    STORE_OPTIONS,
    ConfigError,
    S3Settings,
    add_options,
    load_settings,
    load_store_settings,
    parse_duration,
    secret_values,
)
from .runner import EXIT_INTERRUPTED, EXIT_STORE_UNAVAILABLE, EXIT_USAGE, Runner

RUN_EPILOG = """\
what the job sees in its environment:
  CHECKPOINT_DIR          its state directory, restored from the newest checkpoint
  SPOT_AGENT_RESTORED     the restored checkpoint's sequence number (empty on a fresh start)
  SPOT_AGENT_PID          send it SIGUSR1 to ask for a checkpoint now
  SPOT_AGENT_NOTICE_FILE  appears (JSON: source, action, deadline) when an interruption is coming
  SPOT_AGENT_STATUS_FILE  JSON of the last completed sync (sequence, started, finished)
  SPOT_AGENT_JOB_ID, SPOT_AGENT_ATTEMPT

signals to the agent:
  SIGTERM                 an interruption (docker stop, ECS, Kubernetes): the job gets the stop
                          signal, the final checkpoint is committed, the agent exits 75
  SIGUSR1                 checkpoint now
  SIGINT SIGHUP SIGQUIT SIGUSR2   forwarded to the job's process group

exit status:
  the job's own code when it exits by itself (128+N when killed by signal N;
  127 command not found, 126 not executable)
  75  interrupted; the final checkpoint is committed: retry the job to resume it
  2   a usage or configuration error
  69  the checkpoint store cannot be reached or read at start
  73  the checkpoint could not be restored into the checkpoint dir (disk full, ...)
  74  the job exited 0 but its final checkpoint could not be committed
  76  a newer attempt of the same job has taken over; this one stopped

example:
  spot-agent run --checkpoint-uri s3://my-bucket/ckpt -- python train.py --epochs 90
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spot-agent",
        description="Run a long job on interruptible capacity: supervise it, checkpoint its "
        "state, and resume it on the next attempt.",
    )
    parser.add_argument("--version", action="version", version=f"spot-agent {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        usage="spot-agent run [OPTIONS] -- COMMAND [ARG...]",
        help="run a job under the agent",
        description="Restore the job's newest checkpoint into its checkpoint dir, run COMMAND, "
        "checkpoint the dir periodically, on request and at exit, and on an interruption "
        "notice stop the job in time to commit a final checkpoint. Every option can also be "
        "set with the environment variable shown.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(run, RUN_OPTIONS)
    run.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    ck = sub.add_parser("checkpoints", help="inspect and restore stored checkpoints")
    ck_sub = ck.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = ck_sub.add_parser("list", help="a job's checkpoints: sequence, time, size, files")
    show = ck_sub.add_parser("show", help="one checkpoint's files and metadata")
    show.add_argument("sequence", nargs="?", type=int, help="default: the newest")
    rst = ck_sub.add_parser("restore", help="restore a checkpoint into a directory")
    rst.add_argument("sequence", nargs="?", type=int, help="default: the newest intact one")
    rst.add_argument("--to", required=True, metavar="DIR", help="directory to restore into")
    gc = ck_sub.add_parser(
        "gc",
        help="delete stored data no checkpoint references (and, with --keep, old checkpoints)",
        description="Delete blobs that no checkpoint of the job references and that are older "
        "than --min-age (so a sync in progress is never harmed). With --keep N, first delete "
        "all but the N newest checkpoints.",
    )
    gc.add_argument("--keep", type=int, metavar="N", help="keep only the N newest checkpoints")
    gc.add_argument(
        "--min-age",
        default="24h",
        metavar="DURATION",
        help="only delete blobs older than this [default: 24h]",
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would be deleted")
    gc.add_argument(
        "--no-agent-running",
        action="store_true",
        help="no agent of this job is running: allow a --min-age under 1h",
    )
    for p in (lst, show, rst, gc):
        add_options(p, STORE_OPTIONS)
    for p in (lst, show):
        p.add_argument("--json", action="store_true", help="print JSON")

    _mount_imds_mock(sub)
    _mount_batch(sub)
    return parser


def _mount_imds_mock(sub: Any) -> None:
    p = sub.add_parser(
        "imds-mock",
        help="a local EC2 metadata service that can post interruption notices",
        description=(imds_mock.__doc__ or "").strip().split("\n\n")[0],
    )
    imds_mock.add_arguments(p)
    p.set_defaults(handler=imds_mock.main)


def _mount_batch(sub: Any) -> None:
    p = sub.add_parser(
        "batch",
        help="AWS Batch: a job definition for spot",
        description="AWS Batch integration: job definitions whose retry strategy resumes "
        "interrupted jobs.",
    )
    batch.add_arguments(p)
    p.set_defaults(handler=batch.main)


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``run`` options end at the first ``--``; everything after it is the job's command."""
    if argv[:1] == ["run"] and "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    head, command = _split_command(args_list)
    parser = build_parser()
    args = parser.parse_args(head)
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.verb == "run":
            cmd = command if command is not None else list(args.command)
            return _run(args, cmd)
        if args.verb == "checkpoints":
            return _checkpoints(args)
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"spot-agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _open(uri: str, setting: str, s3: S3Settings) -> Store:
    try:
        return open_store(uri, **s3.store_options())
    except StoreURIError as exc:
        if exc.setting:  # another variable is at fault: name it, not the URI
            problem = str(exc).removeprefix(f"{exc.setting}=")
            raise ConfigError(exc.setting, problem) from None
        raise ConfigError(setting, str(exc)) from None


def _run(args: argparse.Namespace, command: list[str]) -> int:
    settings = load_settings(args, command, os.environ)
    logs.configure()
    logs.set_known_secrets(secret_values(os.environ))
    store = _open(
        settings.checkpoint_uri, "--checkpoint-uri (SPOT_AGENT_CHECKPOINT_URI)", settings.s3
    )
    if settings.log_group:
        logs.attach(cloudwatch.open_logs(settings.log_group, settings.log_stream))
    if settings.job_id_source.startswith("derived"):
        print(
            f"spot-agent: job id {settings.job_id} ({settings.job_id_source}; "
            "set --job-id to choose one)",
            file=sys.stderr,
        )
    runner = Runner(settings, store)
    code = runner.run()
    if runner.abandoned_work:
        # A transfer is stuck on a store that stopped answering, past the deadline. Python
        # would join its thread at exit and hold the container up for as long as the SDK's
        # timeouts and retries allow; what matters is committed or logged, so leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


# -- checkpoints ------------------------------------------------------------------------


def _checkpoints(args: argparse.Namespace) -> int:
    ss = load_store_settings(args, os.environ)
    if not ss.job_id:
        raise ConfigError("--job-id (SPOT_AGENT_JOB_ID)", "which job? give --job-id")
    store = _open(ss.checkpoint_uri, "--checkpoint-uri (SPOT_AGENT_CHECKPOINT_URI)", ss.s3)
    job = JobStore(store, ss.job_id)
    try:
        if args.action == "list":
            return _list(job, args.json)
        if args.action == "show":
            return _show(job, args.sequence, args.json)
        if args.action == "gc":
            return _gc(job, args)
        return _restore(job, args.sequence, Path(args.to))
    except StoreError as exc:
        print(f"spot-agent: {exc}", file=sys.stderr)
        return EXIT_STORE_UNAVAILABLE
    except CheckpointError as exc:
        print(f"spot-agent: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


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
            f"{r['files']:>6}  {_human(r['bytes']):>10}  {progress}"
        )
    return 0


def _show(job: JobStore, sequence: int | None, as_json: bool) -> int:
    seqs = job.sequences()
    if not seqs:
        print(f"no checkpoints for job {job.job_id} in {job.store.uri}", file=sys.stderr)
        return 1
    seq = seqs[-1] if sequence is None else sequence
    if seq not in seqs:
        print(
            f"spot-agent: job {job.job_id} has no checkpoint {seq} (it has {seqs[0]}..{seqs[-1]})",
            file=sys.stderr,
        )
        return 1
    raw = job.store.get_object(job.manifest_key(seq))
    m = job.load_manifest(seq)
    if as_json:
        print(json.dumps(json.loads(raw), indent=2))
        return 0
    print(
        f"checkpoint {m.sequence} of job {m.job_id}: {m.created}, attempt {m.attempt}, "
        f"reason {m.reason}, {len(m.files)} files, {_human(m.size)}, "
        f"{len(m.blob_hashes())} distinct chunks"
    )
    if m.progress:
        print("progress: " + " ".join(f"{k}={v}" for k, v in m.progress.items()))
    for f in m.files:
        print(f"  {f.mode:04o} {f.size:>14,d}  {f.path}")
    for lk in m.links:
        print(f"  link {'':>14}  {lk.path} -> {lk.target}")
    return 0


def _gc(job: JobStore, args: argparse.Namespace) -> int:
    try:
        min_age = timedelta(seconds=parse_duration(args.min_age))
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
    if args.keep is not None:
        seqs = job.sequences()
        pruned = seqs[: -args.keep]
        if not args.dry_run:
            job.store.delete_objects(job.manifest_key(seq) for seq in pruned)
    r = collect_garbage(job, min_age=min_age, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {len(pruned)} old checkpoints and {r.deleted} unreferenced blobs "
        f"({_human(r.bytes_deleted)}); kept {r.manifests} checkpoints, {r.referenced} "
        f"referenced blobs, {r.kept_young} unreferenced blobs younger than {args.min_age}"
    )
    return 0


def _restore(job: JobStore, sequence: int | None, to: Path) -> int:
    ckpt = Checkpointer(job, to)
    try:
        r = ckpt.restore(sequence)
    finally:
        ckpt.close()
    for seq, why in r.skipped:
        print(f"spot-agent: checkpoint {seq} is damaged, skipped: {why}", file=sys.stderr)
    if r.manifest is None:
        print(f"spot-agent: no intact checkpoint for job {job.job_id}", file=sys.stderr)
        return 1
    print(
        f"restored checkpoint {r.manifest.sequence} into {to}: {r.files_written} files "
        f"downloaded, {r.files_kept} already present, {_human(r.bytes_downloaded)} "
        f"in {r.seconds:.2f}s"
    )
    return 0


__all__ = ["EXIT_INTERRUPTED", "build_parser", "main"]
