"""What the agent tells a running job, read: its pid, the signals it names (as ``kill -l``
names them, real-time ones included) and the small JSON files it publishes (the last sync's
status, the interruption notice). The job API (:mod:`checkpoint.api`, the framework
callbacks) reads the agent only through these.

Standard library only, Python 3.9: part of the job API (``checkpoint/api_files.py``).
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from . import protocol


def agent_pid() -> int | None:
    """The agent's pid (``SPOT_AGENT_PID``); None when the job runs without an agent."""
    raw = os.environ.get(protocol.PID_ENV, "")
    return int(raw) if raw.isdigit() else None


def signal_named(variable: str, default: int) -> int:
    """The signal the agent names in ``variable``, else ``default``.

    The agent writes names as ``kill -l`` prints them: ``SIGUSR2``, and for real-time
    signals ``SIGRTMIN+2`` or ``SIGRTMAX-1``, which ``signal.Signals`` has no members for.
    """
    name = os.environ.get(variable, "").strip().upper()
    if not name:
        return default
    bare = name[3:] if name.startswith("SIG") else name
    for base, first in (("RTMIN", signal.SIGRTMIN), ("RTMAX", signal.SIGRTMAX)):
        if bare.startswith(base):
            offset = bare[len(base) :] or "+0"
            if re.fullmatch(r"[+-][0-9]{1,2}", offset):
                number = first + int(offset)
                if signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                    return number
            return default
    if re.fullmatch(r"[0-9]{1,2}", bare):
        return int(bare)
    try:
        return signal.Signals["SIG" + bare]
    except KeyError:
        return default


def agent_file(variable: str) -> dict[str, Any] | None:
    """A small JSON file the agent publishes for the job, if it exists yet."""
    path = os.environ.get(variable)
    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
