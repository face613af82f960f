"""The job author's API: state in CHECKPOINT_DIR, sync requests, interruption notices.

Works without the agent too (the directory defaults to ``./checkpoint``; sync requests and
notices then do nothing), so a job runs the same on a laptop and under ``spot-agent run``.

    import checkpoint

    state = checkpoint.load_json("state.json", default={"next": 0})
    for i in range(state["next"], n):
        work(i)
        checkpoint.save_json("state.json", {"next": i + 1})
        if checkpoint.interrupted():
            break            # the agent commits what was saved, then exits 75
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .manifest import RESERVED_DIR, TEMP_SUFFIX

_DEFAULT_DIR = "checkpoint"


def directory() -> Path:
    """The checkpoint dir: restored state on start; what is in it is what gets saved."""
    path = Path(os.environ.get("CHECKPOINT_DIR") or _DEFAULT_DIR)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _resolve(name: str | os.PathLike[str]) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{name!s}: give a path relative to the checkpoint dir")
    return directory() / rel


@contextlib.contextmanager
def atomic_write(name: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write a file so that readers, and the agent's syncs, see the old or the new whole file.

    The data goes to a temporary file beside the target (never synced), is flushed to disk,
    and replaces the target in one rename.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write mode must be 'w' or 'wb'")
    path = _resolve(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with open(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_bytes(name: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(name) as fh:
        fh.write(data)


def load_bytes(name: str | os.PathLike[str], default: bytes | None = None) -> bytes | None:
    try:
        return _resolve(name).read_bytes()
    except FileNotFoundError:
        return default


def save_json(name: str | os.PathLike[str], obj: Any) -> None:
    """Replace ``name`` with ``obj`` as JSON, atomically."""
    save_bytes(name, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def load_json(name: str | os.PathLike[str], default: Any = None) -> Any:
    """The JSON saved under ``name``, or ``default`` when there is none yet."""
    data = load_bytes(name)
    return default if data is None else json.loads(data)


def report_progress(**fields: Any) -> None:
    """Small figures shown by ``spot-agent checkpoints list`` (e.g. step=1200, loss=0.31).

    Stored in the next checkpoint's manifest, not among the job's files.
    """
    path = directory() / RESERVED_DIR / "progress.json"
    path.parent.mkdir(exist_ok=True, mode=0o700)
    tmp = path.with_name(f".progress.{os.getpid()}{TEMP_SUFFIX}")
    tmp.write_text(json.dumps(fields, default=str))
    os.replace(tmp, path)


def _agent_pid() -> int | None:
    raw = os.environ.get("SPOT_AGENT_PID", "")
    return int(raw) if raw.isdigit() else None


def _agent_file(variable: str) -> dict[str, Any] | None:
    """A small JSON file the agent publishes for the job, if it exists yet."""
    path = os.environ.get(variable)
    if not path:
        return None
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def last_sync() -> dict[str, Any] | None:
    """The agent's last completed sync: ``sequence`` (the newest committed checkpoint),
    ``started`` and ``finished`` (Unix times), ``reason``. None without an agent."""
    return _agent_file("SPOT_AGENT_STATUS_FILE")


def request_sync(wait: float | None = None) -> bool:
    """Ask the agent to checkpoint now (SIGUSR1). Returns False when there is no agent.

    With ``wait`` (seconds), block until a checkpoint that started after this call has been
    committed, and return False if that did not happen in time.
    """
    pid = _agent_pid()
    if pid is None:
        return False
    asked = time.time()
    os.kill(pid, signal.SIGUSR1)
    if wait is None:
        return True
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        status = last_sync()
        if status and float(status.get("started", 0)) >= asked:
            return True
        time.sleep(0.05)
    return False


def notice() -> dict[str, Any] | None:
    """The interruption notice, once the agent has received one (source, action, deadline)."""
    return _agent_file("SPOT_AGENT_NOTICE_FILE")


def interrupted() -> bool:
    """True once an interruption notice has arrived: save your state and stop soon."""
    return notice() is not None
