"""Settings: read once, from options and the environment, validated into one frozen object.

Every option of ``spot-agent run`` also reads an environment variable, so a container is
configured without changing its command. The precedence is: option, environment, default.
This is the only module of the agent that reads the environment (the AWS SDK's own
variables are checked by :mod:`agent.aws_environment`, on the mapping given here).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aws_environment import check_aws_environment, uses_aws


class ConfigError(Exception):
    """A setting with a bad value. ``str()`` is the one line shown to the user."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
_LOG_GROUP = re.compile(r"[.\-_/#A-Za-z0-9]{1,512}\Z")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\Z")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(raw: str) -> float:
    """Seconds from '300', '300s', '5m', '1.5h'; raises ValueError for anything else."""
    m = _DURATION.match(raw.strip().lower())
    if not m:
        if raw.strip().startswith("-"):
            raise ValueError(f"must not be negative, got {raw!r}")
        raise ValueError(f"expected seconds or a duration like 30s, 5m, 2h; got {raw!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_signal(raw: str) -> signal.Signals:
    name = raw.strip().upper()
    if name.isdigit():
        try:
            return signal.Signals(int(name))
        except ValueError:
            raise ValueError(f"no signal number {name}") from None
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {raw!r} (try SIGTERM, SIGINT, SIGUSR2)") from None


#: signals the agent cannot take as its sync request: a notice, reaping, uncatchable ones
_NOT_SYNC_SIGNALS = frozenset(
    {signal.SIGTERM, signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP, signal.SIGINT}
)


def parse_sync_signal(raw: str) -> signal.Signals:
    sig = parse_signal(raw)
    if sig in _NOT_SYNC_SIGNALS:
        raise ValueError(
            f"{sig.name} cannot be the sync request signal (it already means something to "
            "the agent); try SIGUSR1, SIGUSR2 or SIGRTMIN"
        )
    return sig


def parse_exit_code(raw: str) -> int:
    if not raw.strip().isdigit() or not 0 <= int(raw) <= 255:
        raise ValueError(f"expected an exit status 0-255, got {raw!r}")
    return int(raw)


#: the default --upload-reserve: this share of the grace period, at most the cap. A third
#: of docker's 10 s is 3.3 s (the job gets 6.7 s to stop); from a 30 s grace period on
#: (ECS, Batch) it is the cap, 10 s.
RESERVE_SHARE = 1 / 3
RESERVE_CAP = 10.0


def default_upload_reserve(grace_period: float) -> float:
    return min(grace_period * RESERVE_SHARE, RESERVE_CAP)


def parse_job_id(raw: str) -> str:
    if not _JOB_ID.match(raw) or ".." in raw:
        raise ValueError(
            f"{raw!r} is not a usable job id: use 1-128 letters, digits and . _ : -, "
            "starting with a letter or digit, with no '/' or '..' (it names a store prefix)"
        )
    return raw


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}; got {raw!r}")
        return value

    return parse


def parse_log_group(raw: str) -> str:
    if not _LOG_GROUP.match(raw):
        raise ValueError(f"{raw!r} is not a CloudWatch log group name (letters, digits, ._-/#)")
    return raw


_STREAM_FIELDS = ("job_id", "host")


def parse_log_stream(raw: str) -> str:
    """A log stream name template: text with {job_id} and {host} (':' and '*' are not allowed
    in a stream name, so they are replaced by '-' when the name is made)."""
    try:
        raw.format(**{name: "x" for name in _STREAM_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{raw!r} is not a stream name template ({exc}); use text with "
            + ", ".join("{" + n + "}" for n in _STREAM_FIELDS)
        ) from None
    if not raw.strip() or len(raw) > 512:
        raise ValueError(f"{raw!r} is not a usable stream name (1-512 characters)")
    return raw


def log_stream_name(template: str, *, job_id: str, host: str) -> str:
    name = template.format(job_id=job_id, host=host)
    return name.replace(":", "-").replace("*", "-")[:512]


def parse_switch(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def parse_count(raw: str) -> int:
    if not raw.strip().isdigit():
        raise ValueError(f"expected a whole number >= 0, got {raw!r}")
    return int(raw)


SSE_CHOICES = ("default", "AES256", "aws:kms")
ADDRESSING_STYLES = ("auto", "virtual", "path")
_SSE_SPELLINGS = {"default": "default", "none": "default", "aes256": "AES256", "aws:kms": "aws:kms"}


def parse_sse(raw: str) -> str:
    """default | AES256 | aws:kms (any case; 'none', the old spelling, means default)."""
    value = _SSE_SPELLINGS.get(raw.strip().lower())
    if value is None:
        raise ValueError(f"expected one of {', '.join(SSE_CHOICES)}; got {raw!r}")
    return value


def parse_kms_key_id(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value) or len(value) > 2048:
        raise ValueError(f"{raw!r} is not a KMS key id, key ARN or alias/NAME")
    return value


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    help: str
    parse: Callable[[str], Any]
    default: str | None = None
    metavar: str | None = None
    switch: bool = False  # a flag without a value: present means "true"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def setting(self) -> str:
        return f"{self.flag} ({self.env})"


def _state_home(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or "/tmp", ".local", "state"
    )
    return Path(base) / "spot-agent"


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
        "(default: AWS_BATCH_JOB_ID, else derived from the command)",
        parse_job_id,
        metavar="ID",
    ),
    Option(
        "--sync-interval",
        "SPOT_AGENT_SYNC_INTERVAL",
        "checkpoint this often while the job runs; 0 turns periodic syncs off",
        parse_duration,
        default="5m",
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
        "SPOT_AGENT_PID); with another choice, SIGUSR1 is forwarded to the job like the rest",
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
        "(writes through mmap may not show in them): open (files open or mapped for writing "
        "by the job), all, never; the final checkpoint after an interruption reads all",
        parse_choice("open", "all", "never"),
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
)

#: How the S3 store talks to the bucket: passed to ``checkpoint.store.open_store`` as
#: keyword arguments, never read by ``checkpoint/`` itself.
S3_OPTIONS: tuple[Option, ...] = (
    Option(
        "--sse",
        "SPOT_AGENT_SSE",
        "server-side encryption asked for each object: default (send no header: the "
        "bucket's default encryption applies; on AWS at least SSE-S3), AES256 (SSE-S3), "
        "aws:kms (SSE-KMS, with --sse-kms-key-id or the account's aws/s3 key); see "
        "docs/storage.md",
        parse_sse,
        default="default",
        metavar="MODE",
    ),
    Option(
        "--sse-kms-key-id",
        "SPOT_AGENT_SSE_KMS_KEY_ID",
        "the KMS key (id, ARN or alias/NAME) for --sse aws:kms",
        parse_kms_key_id,
        metavar="KEY",
    ),
    Option(
        "--s3-addressing-style",
        "SPOT_AGENT_S3_ADDRESSING_STYLE",
        "auto (path addressing for an IP or localhost endpoint, else the SDK's choice), "
        "virtual (bucket.host) or path (host/bucket)",
        parse_choice(*ADDRESSING_STYLES),
        default="auto",
        metavar="STYLE",
    ),
)

RUN_OPTIONS = RUN_OPTIONS + S3_OPTIONS

STORE_OPTIONS = (
    tuple(o for o in RUN_OPTIONS if o.flag in ("--checkpoint-uri", "--job-id")) + S3_OPTIONS
)


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    for opt in options:
        shown = f" [default: {opt.default}]" if opt.default is not None else ""
        if opt.switch:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action="store_const",
                const="true",
                default=None,
                help=f"{opt.help}; env {opt.env}=true",
            )
            continue
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            default=None,
            metavar=opt.metavar,
            help=f"{opt.help}; env {opt.env}{shown}",
        )


def _resolve(opt: Option, args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    raw = getattr(args, opt.dest, None)
    if raw is None:
        raw = environ.get(opt.env) or opt.default
    if raw is None:
        return None
    try:
        return opt.parse(raw)
    except ValueError as exc:
        raise ConfigError(opt.setting, str(exc)) from None


@dataclass(frozen=True)
class S3Settings:
    """How the S3 store is used; :meth:`store_options` is what ``open_store`` takes."""

    sse: str = "default"
    kms_key_id: str | None = None
    addressing_style: str = "auto"

    def store_options(self) -> dict[str, str | None]:
        return {
            "sse": None if self.sse == "default" else self.sse,
            "kms_key_id": self.kms_key_id,
            "addressing_style": None if self.addressing_style == "auto" else self.addressing_style,
        }


def load_s3_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> S3Settings:
    """The S3 options, checked together: a KMS key id is only used with aws:kms."""
    values = {o.dest: _resolve(o, args, environ) for o in S3_OPTIONS}
    sse, key = values["sse"], values["sse_kms_key_id"]
    if key and sse != "aws:kms":
        raise ConfigError(
            S3_OPTIONS[1].setting,
            f"a KMS key id is only used with --sse aws:kms (SPOT_AGENT_SSE=aws:kms), and "
            f"the encryption asked for is {sse!r}: set both, or neither",
        )
    return S3Settings(sse=sse, kms_key_id=key, addressing_style=values["s3_addressing_style"])


@dataclass(frozen=True)
class StoreSettings:
    checkpoint_uri: str
    job_id: str | None
    s3: S3Settings = S3Settings()


@dataclass(frozen=True)
class Settings:
    command: tuple[str, ...]
    checkpoint_uri: str
    checkpoint_dir: Path
    job_id: str
    job_id_source: str
    sync_interval: float
    log_group: str | None
    log_stream: str
    child_output: str
    sample_interval: float
    stop_signal: signal.Signals
    imds: str
    imds_endpoint: str
    imds_endpoint_set: bool
    imds_interval: float
    grace_period: float
    upload_reserve: float
    checkpoint_keep: int
    batch_attempt: int | None
    batch_job_id: str | None = None  # AWS_BATCH_JOB_ID: this attempt's own job in Batch
    batch_job_queue: str | None = None
    batch_compute_environment: str | None = None
    continue_jobs: bool = False
    sync_signal: signal.Signals = signal.SIGUSR1
    job_exit_75_as: int | None = None
    imds_v1: str = "allow"  # "allow" or "forbid": IMDSv1 fallback when the token PUT fails
    imds_disabled: bool = False  # AWS_EC2_METADATA_DISABLED=true: no metadata requests at all
    log_format: str = "auto"
    log_level: str = "info"
    log_color: bool = True  # no NO_COLOR, no TERM=dumb: colour if the terminal allows
    s3: S3Settings = S3Settings()
    rehash: str = "open"
    child_environ: Mapping[str, str] = field(repr=False, default_factory=dict)


_IMDS_ENDPOINTS = {"ipv4": "http://169.254.169.254", "ipv6": "http://[fd00:ec2::254]"}


def _imds_endpoint(environ: Mapping[str, str]) -> str:
    """The SDKs' rules: an explicit endpoint wins, else the endpoint mode picks IPv4 or IPv6."""
    mode = environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "").strip().lower() or "ipv4"
    if mode not in _IMDS_ENDPOINTS:
        raise ConfigError(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
            f"expected IPv4 or IPv6, got {environ['AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE']!r}",
        )
    raw = environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or _IMDS_ENDPOINTS[mode]
    if not re.match(r"https?://[^/\s]+/?\Z", raw):
        raise ConfigError(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            f"expected a URL like http://169.254.169.254 or http://127.0.0.1:1338, got {raw!r}",
        )
    return raw.rstrip("/")


def _imds_v1(values: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    if values["imds_v1"]:
        return str(values["imds_v1"])
    try:  # botocore's own switch: its IMDSv1 fallback is off, so is ours
        v1_disabled = parse_switch(environ.get("AWS_EC2_METADATA_V1_DISABLED", ""))
    except ValueError as exc:
        raise ConfigError("AWS_EC2_METADATA_V1_DISABLED", str(exc)) from None
    return "forbid" if v1_disabled else "allow"


def _imds_disabled(environ: Mapping[str, str]) -> bool:
    # botocore: only the word "true" (any case) turns it off; anything else leaves it on.
    return environ.get("AWS_EC2_METADATA_DISABLED", "false").strip().lower() == "true"


def default_store_uri(environ: Mapping[str, str]) -> str:
    return (_state_home(environ) / "store").as_uri()


def derived_job_id(command: tuple[str, ...]) -> str:
    return "job-" + hashlib.sha256("\0".join(command).encode()).hexdigest()[:12]


def _job_id(
    args: argparse.Namespace, environ: Mapping[str, str], command: tuple[str, ...]
) -> tuple[str, str]:
    opt = next(o for o in RUN_OPTIONS if o.flag == "--job-id")
    explicit = _resolve(opt, args, environ)
    if explicit:
        return explicit, "option" if getattr(args, "job_id", None) else opt.env
    batch = environ.get("AWS_BATCH_JOB_ID")
    if batch:
        try:
            return parse_job_id(batch), "AWS_BATCH_JOB_ID"
        except ValueError as exc:
            raise ConfigError("AWS_BATCH_JOB_ID", str(exc)) from None
    return derived_job_id(command), "derived from the command"


def load_store_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> StoreSettings:
    opts = {o.flag: o for o in RUN_OPTIONS}
    uri = _resolve(opts["--checkpoint-uri"], args, environ) or default_store_uri(environ)
    job_id = _resolve(opts["--job-id"], args, environ) or environ.get("AWS_BATCH_JOB_ID") or None
    s3 = load_s3_settings(args, environ)
    if uses_aws(uri):
        check_aws_environment(environ)
    return StoreSettings(uri, job_id, s3)


def load_settings(
    args: argparse.Namespace, command: list[str], environ: Mapping[str, str]
) -> Settings:
    if not command:
        raise ConfigError(
            "COMMAND", "no command given: spot-agent run [OPTIONS] -- COMMAND [ARG...]"
        )
    cmd = tuple(command)
    values = {
        o.dest: _resolve(o, args, environ)
        for o in RUN_OPTIONS
        if o.flag != "--job-id" and o not in S3_OPTIONS
    }
    s3 = load_s3_settings(args, environ)
    job_id, source = _job_id(args, environ, cmd)
    checkpoint_dir = values["checkpoint_dir"]
    checkpoint_dir = (
        Path(checkpoint_dir).expanduser().absolute()
        if checkpoint_dir
        else _state_home(environ) / "jobs" / job_id / "checkpoint"
    )
    if values["grace_period"] <= 0:
        raise ConfigError("--grace-period (SPOT_AGENT_GRACE_PERIOD)", "must be longer than 0s")
    if values["upload_reserve"] is None:
        values["upload_reserve"] = default_upload_reserve(values["grace_period"])
    elif values["upload_reserve"] >= values["grace_period"]:
        raise ConfigError(
            "--upload-reserve (SPOT_AGENT_UPLOAD_RESERVE)",
            f"must be shorter than the grace period ({values['grace_period']:g}s), "
            f"got {values['upload_reserve']:g}s",
        )
    checkpoint_uri = values["checkpoint_uri"] or default_store_uri(environ)
    if uses_aws(checkpoint_uri, values["log_group"], values["continue_after_last_attempt"]):
        check_aws_environment(environ)
    batch_attempt = environ.get("AWS_BATCH_JOB_ATTEMPT", "")
    return Settings(
        command=cmd,
        checkpoint_uri=checkpoint_uri,
        checkpoint_dir=checkpoint_dir,
        job_id=job_id,
        job_id_source=source,
        sync_interval=values["sync_interval"],
        log_group=values["log_group"],
        log_stream=log_stream_name(
            values["log_stream"],
            job_id=job_id,
            host=environ.get("HOSTNAME") or socket.gethostname(),
        ),
        child_output=values["child_output"],
        sample_interval=values["sample_interval"],
        stop_signal=values["stop_signal"],
        imds=values["imds"],
        imds_endpoint=_imds_endpoint(environ),
        imds_endpoint_set=bool(environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")),
        imds_interval=max(values["imds_interval"], 0.1),
        grace_period=values["grace_period"],
        upload_reserve=values["upload_reserve"],
        checkpoint_keep=values["checkpoint_keep"],
        batch_attempt=int(batch_attempt) if batch_attempt.isdigit() else None,
        batch_job_id=environ.get("AWS_BATCH_JOB_ID") or None,
        batch_job_queue=environ.get("AWS_BATCH_JQ_NAME") or None,
        batch_compute_environment=environ.get("AWS_BATCH_CE_NAME") or None,
        continue_jobs=values["continue_after_last_attempt"],
        sync_signal=values["sync_signal"],
        job_exit_75_as=values["job_exit_75_as"],
        imds_v1=_imds_v1(values, environ),
        imds_disabled=_imds_disabled(environ),
        log_format=values["log_format"],
        log_level=values["log_level"],
        log_color=not environ.get("NO_COLOR") and environ.get("TERM") != "dumb",
        s3=s3,
        rehash=values["rehash"],
        child_environ=_child_environ(environ),
    )


_SECRET_VARIABLE = re.compile(
    r"SECRET|PASSW(?:OR)?D|PASSPHRASE|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY|^AWS_ACCESS_KEY_ID$",
    re.IGNORECASE,
)


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Values of environment variables whose names say they are secrets: the logs mask
    them wherever they would appear (``logs.set_known_secrets``)."""
    return [v for k, v in environ.items() if v and _SECRET_VARIABLE.search(k)]


#: Set in a continuation job of an array child: the index the original child had. Batch
#: reserves the AWS_BATCH_ prefix, so the continuation cannot set AWS_BATCH_JOB_ARRAY_INDEX
#: itself; the agent gives it back to the job.
ARRAY_INDEX_CARRIED = "SPOT_AGENT_ARRAY_INDEX"


def _child_environ(environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    carried = environ.get(ARRAY_INDEX_CARRIED)
    if carried and "AWS_BATCH_JOB_ARRAY_INDEX" not in environ:
        env["AWS_BATCH_JOB_ARRAY_INDEX"] = carried
    return env
