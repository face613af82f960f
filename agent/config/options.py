"""The options of ``spot-agent run`` (and of the store commands), in one table each group:
the run's own here, the store's in :mod:`.store_options`, a group's in :mod:`.group`.
:mod:`.option` says what an option is and how its value is resolved."""

from __future__ import annotations

from checkpoint.engine.save.writers import REHASH_MODES

from .group import GROUP_OPTIONS
from .option import Option, add_options, resolve, state_home
from .parsers import (
    parse_choice,
    parse_count,
    parse_duration,
    parse_duration_or_off,
    parse_exit_code,
    parse_job_id,
    parse_job_queue,
    parse_log_group,
    parse_log_stream,
    parse_signal,
    parse_switch,
    parse_sync_signal,
)
from .store_options import S3_OPTIONS, TRANSFER_OPTIONS

RUN_OPTIONS: tuple[Option, ...] = (
    Option(
        "--checkpoint-uri",
        "SPOT_AGENT_CHECKPOINT_URI",
        "where checkpoints are stored: s3://bucket/prefix or file:///abs/dir "
        "(default: a local store under $XDG_STATE_HOME/spot-agent/store)",
        str,
        metavar="URI",
    ),
    Option(
        "--checkpoint-dir",
        "SPOT_AGENT_CHECKPOINT_DIR",
        "the local directory the job reads and writes its state in; restored before the "
        "job starts, exported to it as CHECKPOINT_DIR "
        "(default: $XDG_STATE_HOME/spot-agent/jobs/JOB_ID/checkpoint)",
        str,
        metavar="DIR",
    ),
    Option(
        "--job-id",
        "SPOT_AGENT_JOB_ID",
        "the job's identity in the store; all attempts of a job share it "
        "(default: AWS_BATCH_JOB_ID, else a hash of the command: change one argument and "
        "the job starts over, so set it for real work)",
        parse_job_id,
        metavar="ID",
    ),
    Option(
        "--sync-interval",
        "SPOT_AGENT_SYNC_INTERVAL",
        "checkpoint this often while the job runs; 0 turns periodic syncs off (early syncs, "
        "see --max-pending-upload, still happen)",
        parse_duration,
        default="5m",
        metavar="DURATION",
    ),
    Option(
        "--max-pending-upload",
        "SPOT_AGENT_MAX_PENDING_UPLOAD",
        "checkpoint early, before the next periodic sync, when what the job wrote since the "
        "last checkpoint would take longer than this to upload at the measured upload rate, "
        "so that the final checkpoint fits in the notice. Default: half of a "
        "spot notice's two minutes; where SIGTERM is the only notice, about half of "
        "--grace-period suits. 0 or off: sync only on the other occasions",
        parse_duration_or_off,
        default="60s",
        metavar="DURATION",
    ),
    Option(
        "--log-group",
        "SPOT_AGENT_LOG_GROUP",
        "also send the structured log to this CloudWatch Logs group",
        parse_log_group,
        metavar="NAME",
    ),
    Option(
        "--log-stream",
        "SPOT_AGENT_LOG_STREAM",
        "the CloudWatch Logs stream within --log-group, a template with {job_id} and "
        "{host}; all attempts of a job append to one stream",
        parse_log_stream,
        default="{job_id}",
        metavar="TEMPLATE",
    ),
    Option(
        "--log-format",
        "SPOT_AGENT_LOG_FORMAT",
        "how the agent's events look on stdout: json (one object per line, what log "
        "pipelines and Logs Insights read), console (compact lines for a person), or auto: "
        "console only at an interactive terminal (stdin and stdout are terminals, and not "
        "PID 1 or in a container, since docker -t, ECS pseudoTerminal and Kubernetes "
        "tty: true still feed a pipeline that parses JSON), else json; NO_COLOR is honoured",
        parse_choice("json", "console", "auto"),
        default="auto",
        metavar="FORMAT",
    ),
    Option(
        "--log-level",
        "SPOT_AGENT_LOG_LEVEL",
        "the least severe agent events shown: debug, info, warning or error (the job's own "
        "output is never filtered)",
        parse_choice("debug", "info", "warning", "error"),
        default="info",
        metavar="LEVEL",
    ),
    Option(
        "--child-output",
        "SPOT_AGENT_CHILD_OUTPUT",
        "what becomes of the job's stdout/stderr: raw (passed through unchanged; as events "
        "only to --log-group), json (one JSON event per line on stdout, nothing raw), both",
        parse_choice("raw", "json", "both"),
        default="raw",
        metavar="MODE",
    ),
    Option(
        "--sample-interval",
        "SPOT_AGENT_SAMPLE_INTERVAL",
        "log the job's CPU, memory, open files and process count this often; 0 turns it off",
        parse_duration,
        default="60s",
        metavar="DURATION",
    ),
    Option(
        "--stop-signal",
        "SPOT_AGENT_STOP_SIGNAL",
        "the signal that tells the job to stop on an interruption",
        parse_signal,
        default="SIGTERM",
        metavar="SIGNAL",
    ),
    Option(
        "--stop-signal-to",
        "SPOT_AGENT_STOP_SIGNAL_TO",
        "who gets the stop signal: main (the job's command only, as docker stop and "
        "Kubernetes signal a container's PID 1; a shell's trap decides what its children "
        "get) or group (every process of the job's group). Either way it is sent between "
        "two saves (waiting up to 1s for a save to end)",
        parse_choice("main", "group"),
        default="main",
        metavar="WHO",
    ),
    Option(
        "--imds",
        "SPOT_AGENT_IMDS",
        "poll the EC2 metadata service for notices: auto (on EC2 or when "
        "AWS_EC2_METADATA_SERVICE_ENDPOINT is set; keeps trying in the background), on "
        "(also warn loudly while it does not answer), off",
        parse_choice("auto", "on", "off"),
        default="auto",
        metavar="MODE",
    ),
    Option(
        "--imds-v1",
        "SPOT_AGENT_IMDS_V1",
        "when the IMDSv2 token request times out or is refused (a hop limit of 1 in a "
        "container), carry on with IMDSv1 requests (allow, as the AWS SDKs do) or not "
        "(forbid) [default: allow; forbid when AWS_EC2_METADATA_V1_DISABLED=true]",
        parse_choice("allow", "forbid"),
        metavar="POLICY",
    ),
    Option(
        "--imds-interval",
        "SPOT_AGENT_IMDS_INTERVAL",
        "how often to poll the metadata service",
        parse_duration,
        default="2s",
        metavar="DURATION",
    ),
    Option(
        "--grace-period",
        "SPOT_AGENT_GRACE_PERIOD",
        "time between SIGTERM and the platform's SIGKILL (ECS stopTimeout, Kubernetes "
        "terminationGracePeriodSeconds, docker stop -t)",
        parse_duration,
        default="30s",
        metavar="DURATION",
    ),
    Option(
        "--startup-timeout",
        "SPOT_AGENT_STARTUP_TIMEOUT",
        "how long to keep retrying a store that fails at start in a way that may pass "
        "(throttling, 5xx, resets, timeouts), with back-off and a log line per wait; then "
        "exit 81, which the Batch retry strategy retries. No bucket, access denied or bad "
        "credentials fail at once (exit 69). 0: one try",
        parse_duration,
        default="3m",
        metavar="DURATION",
    ),
    Option(
        "--upload-reserve",
        "SPOT_AGENT_UPLOAD_RESERVE",
        "time kept back before a deadline for the final checkpoint: the job is SIGKILLed "
        "this long before the deadline if it has not stopped (at least this; more when the "
        "last sync took longer). Default: a third of --grace-period, at most 10s (3.3s for "
        "docker stop's 10s, 10s for ECS's 30s)",
        parse_duration,
        metavar="DURATION",
    ),
    Option(
        "--sync-signal",
        "SPOT_AGENT_SYNC_SIGNAL",
        "the signal that asks the agent for a checkpoint now (the job sends it to "
        "SPOT_AGENT_PID); with another choice, SIGUSR1 is forwarded to the job like the rest. "
        "A real-time one works too: SIGRTMIN+2, RTMIN+2 or 36",
        parse_sync_signal,
        default="SIGUSR1",
        metavar="SIGNAL",
    ),
    Option(
        "--job-exit-75-as",
        "SPOT_AGENT_JOB_EXIT_75_AS",
        "exit with this status when the job itself exits 75, so that it cannot be taken for "
        "an interruption (75) by a retry strategy (default: 75 passes through unchanged)",
        parse_exit_code,
        metavar="STATUS",
    ),
    Option(
        "--checkpoint-keep",
        "SPOT_AGENT_CHECKPOINT_KEEP",
        "how many committed checkpoints to keep; older ones are deleted (0 keeps all)",
        parse_count,
        default="10",
        metavar="N",
    ),
    Option(
        "--rehash",
        "SPOT_AGENT_REHASH",
        "which files each sync reads again although their size and times are unchanged "
        "(writes through mmap may not show in them): open (files the job has had open or "
        "mapped for writing since the last sync began, the final sync's too), all (every "
        "file, every sync), never",
        parse_choice(*REHASH_MODES),
        default="open",
        metavar="MODE",
    ),
    Option(
        "--continue-after-last-attempt",
        "SPOT_AGENT_CONTINUE_JOBS",
        "on AWS Batch, when an interruption ends the job's last allowed attempt, submit a "
        "continuation job that restores the same checkpoints (needs batch:DescribeJobs, "
        "batch:DescribeJobDefinitions and batch:SubmitJob)",
        parse_switch,
        default="false",
        switch=True,
    ),
    Option(
        "--fallback-queue",
        "SPOT_AGENT_FALLBACK_QUEUE",
        "on AWS Batch, the job queue (name or ARN; on-demand capacity) a job moves to after "
        "--fallback-after interruptions: the agent commits, submits a continuation there "
        "and exits 80, which the retry strategy does not retry (needs batch:DescribeJobs "
        "and batch:SubmitJob)",
        parse_job_queue,
        metavar="QUEUE",
    ),
    Option(
        "--fallback-after",
        "SPOT_AGENT_FALLBACK_AFTER",
        "how many interruptions of the job (counted across its attempts and continuations, "
        "from the store) move it to --fallback-queue",
        parse_count,
        metavar="N",
    ),
)

RUN_OPTIONS = RUN_OPTIONS + S3_OPTIONS + TRANSFER_OPTIONS + GROUP_OPTIONS

STORE_OPTIONS = (
    tuple(o for o in RUN_OPTIONS if o.flag in ("--checkpoint-uri", "--job-id")) + S3_OPTIONS
)

__all__ = [
    "GROUP_OPTIONS",
    "RUN_OPTIONS",
    "S3_OPTIONS",
    "STORE_OPTIONS",
    "TRANSFER_OPTIONS",
    "Option",
    "add_options",
    "resolve",
    "state_home",
]
