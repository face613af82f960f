"""The command line: ``spot-agent run``, ``checkpoints``, ``doctor``, ``imds-mock``, ``batch``,
``job-api-path``, ``--version``."""

from __future__ import annotations

# ruff: noqa: E402 - the console script imports this module: keep an early SIGTERM first
import sys

from .process import early

early.install(sys.argv)

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, closed_pipe, exits
from . import logs as _logs  # noqa: F401 - before the engine: structlog without rich (agent.logs)
from .config import (
    RUN_OPTIONS,
    ConfigError,
    add_options,
    load_settings,
    secret_values,
)

RUN_EPILOG = """\
what the job sees in its environment:
  CHECKPOINT_DIR          its state directory, restored from the newest checkpoint
  SPOT_AGENT_RESTORED     the restored checkpoint's sequence number (empty on a fresh start)
  SPOT_AGENT_PID          send it the sync signal to ask for a checkpoint now
  SPOT_AGENT_SYNC_SIGNAL  that signal's name (--sync-signal, SIGUSR1 by default)
  SPOT_AGENT_NOTICE_FILE  appears (JSON: source, action, deadline) when an interruption is coming
  SPOT_AGENT_STATUS_FILE  JSON of the last completed sync (sequence, started, finished)
  SPOT_AGENT_LOCK_FILE    hold an exclusive flock on it while saving (checkpoint.saving()
                          does): no checkpoint sees half a save
  SPOT_AGENT_STOP_SIGNAL  the signal the job gets on an interruption (--stop-signal)
  SPOT_AGENT_JOB_ID, SPOT_AGENT_ATTEMPT

signals to the agent:
  SIGTERM                 an interruption (docker stop, ECS, Kubernetes): the job gets the stop
                          signal, the final checkpoint is committed, the agent exits 75
  SIGUSR1                 checkpoint now (the --sync-signal; with another one, SIGUSR1 is
                          forwarded like the rest)
  every other signal      forwarded to the job's process group (before the job has
                          started: SIGINT, SIGHUP and SIGQUIT stop the agent with 128+N
                          unless its parent ignored them (nohup); the others are held and
                          sent once it runs)
  the job starts with the signals the agent's parent ignored (nohup's SIGHUP) or blocked
  still ignored or blocked, as under tini; the stop signal is never blocked
  the agent leaves its start directory for / once the job runs (the job keeps it)

exit status:
  the job's own code when it exits by itself (128+N when killed by signal N;
  127 command not found, 126 not executable)
  75  interrupted; the final checkpoint is committed (or nothing had changed since the
      last one): retry the job to resume it. A job that itself exits 75 looks the same:
      --job-exit-75-as N tells the two apart
  79  interrupted, but the final checkpoint could not be committed in time: a retry
      resumes from the last committed checkpoint (the Batch retry strategy retries it)
  2   a usage or configuration error (also: another agent holds the checkpoint dir)
  69  the checkpoint store cannot be read at start, and will not be by retrying (no such
      bucket, access denied, bad credentials, a file:// store without hard links)
  81  the store kept failing in ways that may pass (throttling, 5xx, resets, timeouts)
      for all of --startup-timeout: the job did not start (the Batch retry strategy
      retries it)
  73  the checkpoint could not be restored into the checkpoint dir (disk full, ...)
  74  the job exited 0 but its final checkpoint could not be committed
  76  a newer attempt of the same job has taken over; this one stopped

example:
  spot-agent run --checkpoint-uri s3://my-bucket/ckpt -- python train.py --epochs 90
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, the options of that command alone.

    Each command's module is imported when its options are mounted, so ``spot-agent run``
    does not load the modules of ``checkpoints``, ``batch`` or ``doctor`` (nor requests or
    boto3 through them) before its job starts. The top level lists every command either way.
    """
    parser = argparse.ArgumentParser(
        prog="spot-agent",
        description="Run a long job on interruptible capacity: supervise it, checkpoint its "
        "state, and resume it on the next attempt.",
    )
    parser.add_argument("--version", action="version", version=f"spot-agent {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for name, (help_text, mount) in COMMANDS.items():
        if only is None or name == only:
            mount(sub, name, help_text)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def _mount_run(sub: Any, name: str, help_text: str) -> None:
    run = sub.add_parser(
        name,
        usage="spot-agent run [OPTIONS] -- COMMAND [ARG...]",
        help=help_text,
        description="Restore the job's newest checkpoint into its checkpoint dir, run COMMAND, "
        "checkpoint the dir periodically, on request and at exit, and on an interruption "
        "notice stop the job in time to commit a final checkpoint. Every option can also be "
        "set with the environment variable shown.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(run, RUN_OPTIONS)
    run.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _mount_checkpoints(sub: Any, name: str, help_text: str) -> None:
    from .checkpoints_cli import command as checkpoints_command

    ck = sub.add_parser(
        name,
        help=help_text,
        description="Inspect, restore and clean up what a checkpoint store holds.",
    )
    checkpoints_command.add_arguments(ck)
    ck.set_defaults(handler=checkpoints_command.main)


def _mount_doctor(sub: Any, name: str, help_text: str) -> None:
    from . import doctor

    p = sub.add_parser(
        name,
        help=help_text,
        description=(doctor.__doc__ or "").strip().split("\n\n")[0].replace("``", "")
        + " Takes every option of `run` (and its environment variables).",
        epilog="exit status: 0 every check passed (or only warned); 1 a launch would lose "
        "work (or, with --strict, a warning); 2 a usage or configuration error",
    )
    doctor.add_arguments(p)
    p.set_defaults(handler=doctor.main)


def _mount_imds_mock(sub: Any, name: str, help_text: str) -> None:
    from . import imds_mock

    p = sub.add_parser(
        name,
        help=help_text,
        description=(imds_mock.__doc__ or "").strip().split("\n\n")[0],
    )
    imds_mock.add_arguments(p)
    p.set_defaults(handler=imds_mock.main)


def _mount_batch(sub: Any, name: str, help_text: str) -> None:
    from .batch import cli as batch_cli

    p = sub.add_parser(
        name,
        help=help_text,
        description="AWS Batch integration: job definitions whose retry strategy resumes "
        "interrupted jobs.",
    )
    batch_cli.add_arguments(p)
    p.set_defaults(handler=batch_cli.main)


def _mount_job_api(sub: Any, name: str, help_text: str) -> None:
    from . import job_api

    p = sub.add_parser(
        name,
        help=help_text,
        description="Copy the job API, the standard-library-only `checkpoint` package a job "
        "imports (Python 3.9+), without the engine, into DIR/checkpoint and print DIR: "
        "put DIR on the job's PYTHONPATH to `import checkpoint` from any interpreter.",
        epilog=job_api.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job_api.add_arguments(p)
    p.set_defaults(handler=job_api.main)


#: every command, in the order --help lists them: its one-line help, and what mounts it
COMMANDS: dict[str, tuple[str, Callable[[Any, str, str], None]]] = {
    "run": ("run a job under the agent", _mount_run),
    "checkpoints": ("inspect, restore and clean up stored checkpoints", _mount_checkpoints),
    "doctor": ("preflight: will a launch with these settings keep its work?", _mount_doctor),
    "imds-mock": (
        "a local EC2 metadata service that can post interruption notices",
        _mount_imds_mock,
    ),
    "batch": ("AWS Batch: a job definition for spot", _mount_batch),
    "job-api-path": (
        "write the job API alone (import checkpoint) to a directory for PYTHONPATH",
        _mount_job_api,
    ),
}


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``run`` options end at the first ``--``; everything after it is the job's command."""
    if argv[:1] == ["run"] and "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    head, command = _split_command(args_list)
    parser = build_parser(only=head[0] if head else "")
    args = parser.parse_args(head)
    if args.verb is None:
        parser.print_help()
        return exits.USAGE
    try:
        if args.verb == "run":
            if command is not None and args.command:
                # argparse hands words no option takes to the (unused) command: refuse them,
                # or `--sync-interval 5 minutes --` would run with 5-second syncs.
                raise ConfigError(
                    "run",
                    f"unexpected argument before --: {' '.join(args.command)} (each option "
                    "takes one value, as in --sync-interval 5m)",
                )
            cmd = command if command is not None else list(args.command)
            return _run(args, cmd)
        return closed_pipe.quietly(lambda: int(args.handler(args)))
    except ConfigError as exc:  # redacted: a URI given with its password is echoed in it
        from . import logs

        print(f"spot-agent: error: {logs.redact_text(str(exc))}", file=sys.stderr)
        return exits.USAGE


def _run(args: argparse.Namespace, command: list[str]) -> int:
    # agent.logs first (not isort's order): it loads structlog without what it does not use
    from . import logs  # noqa: I001
    from checkpoint.engine.restore.restore import raise_open_file_limit
    from .run import run_job
    from .stores import open_configured_store

    settings = load_settings(args, command, os.environ)
    raise_open_file_limit()  # restores of many files; the job keeps the limit it inherited
    logs.configure(fmt=settings.log_format, level=settings.log_level, color=settings.log_color)
    logs.set_known_secrets(secret_values(os.environ))
    store = open_configured_store(settings)
    if settings.log_group:
        from .logs import cloudwatch

        logs.attach(
            cloudwatch.open_logs(settings.log_group, settings.log_stream, settings.s3.aws_region)
        )
    if settings.job_id_source.startswith("derived"):
        print(
            f"spot-agent: warning: job id {settings.job_id} is {settings.job_id_source}: "
            "change any argument and the job starts over from no checkpoint; set --job-id "
            "(or SPOT_AGENT_JOB_ID) to keep one id",
            file=sys.stderr,
        )
    outcome = run_job(settings, store)
    code = outcome.exit_code
    if outcome.usage_error is not None:
        print(f"spot-agent: error: {logs.redact_text(outcome.usage_error)}", file=sys.stderr)
    elif outcome.error is not None:  # the JSON event on stdout says it too, with its fields
        print(f"spot-agent: error: {logs.redact_text(outcome.error)}", file=sys.stderr)
    if outcome.abandoned_work:
        # A transfer (or a restore) is still running past the deadline. Python would join
        # its thread at exit and hold the container up for as long as the SDK's timeouts
        # and retries allow; what matters is committed or logged, so leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


__all__ = ["build_parser", "main"]
