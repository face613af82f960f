"""Parsers of setting values: each takes the raw text and returns the value, or raises
``ValueError`` with what is wrong (the caller names the setting)."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

from ..signals import Sig, sigs


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


def parse_duration_or_off(raw: str) -> float:
    """A duration, or ``off`` (the same as 0): the thing it sets is turned off."""
    if raw.strip().lower() in ("off", "none", "never"):
        return 0.0
    if raw.strip().startswith("-"):
        return parse_duration(raw)  # its own message: must not be negative
    try:
        return parse_duration(raw)
    except ValueError:
        raise ValueError(
            f"expected a duration like 30s, 5m, 2h, or 0/off to turn it off; got {raw!r}"
        ) from None


def parse_signal(raw: str) -> Sig:
    """``SIGUSR1``, ``USR1``, ``10``, and the real-time ones: ``SIGRTMIN+2``, ``RTMAX-1``."""
    return Sig.parse(raw)


#: signals the agent cannot take as its sync request: a notice, reaping, uncatchable ones
_NOT_SYNC_SIGNALS = sigs(
    signal.SIGTERM, signal.SIGCHLD, signal.SIGKILL, signal.SIGSTOP, signal.SIGINT
)


def parse_sync_signal(raw: str) -> Sig:
    sig = parse_signal(raw)
    if sig in _NOT_SYNC_SIGNALS:
        raise ValueError(
            f"{sig.name} cannot be the sync request signal (it already means something to "
            "the agent); try SIGUSR1, SIGUSR2 or SIGRTMIN+1"
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


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
#: --max-bytes-in-flight below this would hold less than one 8 MiB chunk in flight.
MIN_BYTES_IN_FLIGHT = 8 << 20


def parse_byte_size(raw: str) -> int:
    """A size in bytes: 67108864, 64M or 64MiB, 1G (binary units: K, M, G = 2^10, 2^20, 2^30)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", raw, re.IGNORECASE)
    if match is None:
        raise ValueError(f"expected a size such as 64M, 256MiB or 1G, got {raw!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_bytes_in_flight(raw: str) -> int:
    value = parse_byte_size(raw)
    if value < MIN_BYTES_IN_FLIGHT:
        raise ValueError(f"must be at least 8M (one chunk), got {raw!r}")
    return value


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
