"""Settings: read once, from options and the environment, validated into one frozen object.

Every option of ``spot-agent run`` also reads an environment variable, so a container is
configured without changing its command. The precedence is: option, environment, default.
This is the only module of the agent that reads the environment.
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
        "AWS_EC2_METADATA_SERVICE_ENDPOINT is set, if reachable), on (required), off",
        parse_choice("auto", "on", "off"),
        default="auto",
        metavar="MODE",
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
        "time kept back before a deadline for the final checkpoint (at least this; more "
        "when the last sync took longer)",
        parse_duration,
        default="10s",
        metavar="DURATION",
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

STORE_OPTIONS = tuple(o for o in RUN_OPTIONS if o.flag in ("--checkpoint-uri", "--job-id"))


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
class StoreSettings:
    checkpoint_uri: str
    job_id: str | None


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
    rehash: str = "open"
    child_environ: Mapping[str, str] = field(repr=False, default_factory=dict)


def _imds_endpoint(environ: Mapping[str, str]) -> str:
    raw = environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or "http://169.254.169.254"
    if not re.match(r"https?://[^/\s]+/?\Z", raw):
        raise ConfigError(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            f"expected a URL like http://169.254.169.254 or http://127.0.0.1:1338, got {raw!r}",
        )
    return raw.rstrip("/")


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
    return StoreSettings(uri, job_id)


def load_settings(
    args: argparse.Namespace, command: list[str], environ: Mapping[str, str]
) -> Settings:
    if not command:
        raise ConfigError(
            "COMMAND", "no command given: spot-agent run [OPTIONS] -- COMMAND [ARG...]"
        )
    cmd = tuple(command)
    values = {o.dest: _resolve(o, args, environ) for o in RUN_OPTIONS if o.flag != "--job-id"}
    job_id, source = _job_id(args, environ, cmd)
    checkpoint_dir = values["checkpoint_dir"]
    checkpoint_dir = (
        Path(checkpoint_dir).expanduser().absolute()
        if checkpoint_dir
        else _state_home(environ) / "jobs" / job_id / "checkpoint"
    )
    if values["upload_reserve"] >= values["grace_period"]:
        raise ConfigError(
            "--upload-reserve (SPOT_AGENT_UPLOAD_RESERVE)",
            f"must be shorter than the grace period ({values['grace_period']:g}s), "
            f"got {values['upload_reserve']:g}s",
        )
    batch_attempt = environ.get("AWS_BATCH_JOB_ATTEMPT", "")
    return Settings(
        command=cmd,
        checkpoint_uri=values["checkpoint_uri"] or default_store_uri(environ),
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
