"""The job author's API: state in CHECKPOINT_DIR, sync requests, interruption notices.

Works without the agent too (the directory defaults to ``./checkpoint``; sync requests and
notices then do nothing), so a job runs the same on a laptop and under ``spot-agent run``.

    import checkpoint

    state = checkpoint.load_json("state.json", default={"next": 0})
    for i in range(state["next"], n):
        work(i)
        with checkpoint.saving():      # several files, one save: no checkpoint sees half
            checkpoint.save_json("state.json", {"next": i + 1})
            checkpoint.save_bytes("weights.bin", weights)
        if checkpoint.interrupted():   # the stop signal now sets a flag, and we get here
            break            # the agent commits what was saved, then exits 75

Save points: a save holds an exclusive ``flock`` on the lock file (``SPOT_AGENT_LOCK_FILE``)
and, while it runs, the lock file holds the saver's pid; the file is emptied when the save
is complete. The agent freezes the directory only with the lock held and the file empty,
so it sees a save whole or not at all, and a save cut off by a kill is never committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from . import protocol
from ._agent import agent_file, agent_pid, signal_named
from ._fsutil import write_atomic
from .protocol import TEMP_SUFFIX
from .savelock import begin_save, end_save

_DEFAULT_DIR = "checkpoint"


def directory() -> Path:
    """The checkpoint dir: restored state on start; what is in it is what gets saved."""
    path = Path(os.environ.get(protocol.DIR_ENV) or _DEFAULT_DIR)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _resolve(name: str | os.PathLike[str]) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{name!s}: give a path relative to the checkpoint dir")
    return directory() / rel


_saves = threading.local()  # .depth: nested saving() blocks of this thread


def _lock_file() -> Path:
    path = os.environ.get(protocol.LOCK_FILE_ENV)
    if path:
        return Path(path)
    lock = protocol.save_lock_path(directory())
    lock.parent.mkdir(exist_ok=True, mode=0o700)
    return lock


@contextlib.contextmanager
def saving(label: object = None) -> Iterator[None]:
    """A save point: everything written inside is checkpointed together or not at all.

    Holds the agent's save-point lock for the block, so no checkpoint is frozen in the
    middle of it (the agent waits, bounded, for the block to end; keep it to the writes).
    If the block raises, or the process dies inside it, the save counts as unfinished: no
    checkpoint is taken of the directory until a later save completes, and an interrupted
    job's final checkpoint is its last whole save. Nested blocks are one save. Without an
    agent it only takes a lock, so the job runs unchanged on a laptop.

    ``label`` names the save point (the training step): the checkpoint that holds this save
    carries it, and the agents of a multi-node group commit a group checkpoint only when
    every rank has committed a save of the same label (docs/groups.md). A label is one line
    of at most 200 characters; on nested blocks, the outermost one's label counts.
    """
    text = None if label is None else str(label).strip()
    most = protocol.MAX_SAVE_LABEL_CHARS
    if text is not None and (not text or len(text) > most or "\n" in text):
        raise ValueError(f"save label {label!r}: give one line of 1 to {most} characters")
    with _save_point(mark=True, label=text):
        yield


@contextlib.contextmanager
def _save_point(mark: bool, label: str | None = None) -> Iterator[None]:
    """Hold the save-point lock for the block; ``mark``: the block is a save of the job's
    (begun and ended in the lock file: the agent counts the save, and a save cut off by a
    kill is seen at the next start), named ``label`` if given. One file's atomic write needs
    no mark: it is whole or not there."""
    depth = getattr(_saves, "depth", 0)
    if depth:
        _saves.depth = depth + 1
        try:
            yield
        finally:
            _saves.depth = depth
        return
    fd = os.open(_lock_file(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if mark:
            begin_save(fd)
        _saves.depth = 1
        try:
            yield
        finally:
            _saves.depth = 0
        if mark:
            if label is not None:  # under the lock: the freeze reads it with this save
                _write_label(label)
            end_save(fd)  # the save is whole (not reached when the block raised)
    finally:
        os.close(fd)  # releases the lock


def _write_label(label: str) -> None:
    path = _lock_file().with_name(protocol.SAVE_LABEL_NAME)
    write_atomic(path, (label + "\n").encode(), fsync=False, temp_suffix=TEMP_SUFFIX, mode=0o666)


@contextlib.contextmanager
def atomic_write(name: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write a file so that readers, and the agent's syncs, see the old or the new whole file.

    The data goes to a temporary file beside the target (never synced), is flushed to disk,
    and replaces the target in one rename. Outside a :func:`saving` block it is not a save
    point: the file is whole, but the agent may commit it beside an older version of
    another; a job that declares its states by :func:`request_sync` is committed only as
    it stood at a request.
    """
    if mode not in ("w", "wb"):
        raise ValueError("atomic_write mode must be 'w' or 'wb'")
    path = _resolve(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _save_point(mark=False):
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
    path = protocol.progress_path(directory())
    path.parent.mkdir(exist_ok=True, mode=0o700)
    data = json.dumps(fields, default=str).encode()
    write_atomic(path, data, fsync=False, temp_suffix=TEMP_SUFFIX, mode=0o666)


def last_sync() -> dict[str, Any] | None:
    """The agent's last completed sync: ``sequence`` (the newest committed checkpoint),
    ``started`` and ``finished`` (Unix times), ``reason``. None without an agent."""
    return agent_file(protocol.STATUS_FILE_ENV)


def request_sync(wait: float | None = None, *, freeze_timeout: float = 60.0) -> bool:
    """Say "my state is consistent now": the agent freezes it and checkpoints it (the sync
    signal, ``SPOT_AGENT_SYNC_SIGNAL``: SIGUSR1 unless the agent was told otherwise).

    Binding: from the first request on, every checkpoint (periodic, early, final) is the
    dir as it stood at a request or at the end of a :func:`saving` block, never as it
    stands in between. So change no file between asking and the return of this call.

    Returns True once the agent has frozen the directory (milliseconds, or after the sync
    it is busy with, at most ``freeze_timeout`` seconds); from then on the job may change
    its files. False when there is no agent, or no freeze came in time. Inside a
    :func:`saving` block it does not wait (the freeze comes when the save ends).

    With ``wait`` (seconds), block until a checkpoint that started after this call has been
    committed, and return False if that did not happen in time.
    """
    pid = agent_pid()
    if pid is None:
        return False
    asked = time.time()
    os.kill(pid, signal_named(protocol.SYNC_SIGNAL_ENV, signal.SIGUSR1))
    if getattr(_saves, "depth", 0):
        return True
    deadline = time.monotonic() + (freeze_timeout if wait is None else wait)
    while time.monotonic() < deadline:
        status = last_sync() or {}
        if _request_served(status, asked, committed=wait is not None):
            return True
        time.sleep(0.005 if wait is None else 0.05)
    return False


def _request_served(status: dict[str, Any], asked: float, committed: bool) -> bool:
    """Whether the agent's status shows a request made at ``asked`` frozen (``declared``:
    the newest request a freeze covers reached the agent then), or with ``committed`` also
    committed: a sync that started after that request came has ended. An agent that does
    not publish ``declared`` is taken at its ``frozen`` and ``started`` alone."""
    started = float(status.get("started") or 0)
    if "declared" not in status:
        return started >= asked if committed else float(status.get("frozen") or 0) >= asked
    declared = float(status["declared"] or 0)
    return declared >= asked and (not committed or started >= declared)


def notice() -> dict[str, Any] | None:
    """The interruption notice, once the agent has received one (source, action, deadline)."""
    return agent_file(protocol.NOTICE_FILE_ENV)


_stop: dict[str, Any] = {"signal": None, "installed": False}


def handle_stop() -> None:
    """Make the stop signal (``SPOT_AGENT_STOP_SIGNAL``, SIGTERM by default) set a flag that
    :func:`interrupted` reports, instead of ending the process. Call it once, from the main
    thread; :func:`interrupted` calls it for you the first time it runs there."""
    if _stop["installed"] or threading.current_thread() is not threading.main_thread():
        return
    sig = signal_named(protocol.STOP_SIGNAL_ENV, signal.SIGTERM)
    previous = signal.getsignal(sig)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        _stop["signal"] = signum
        if callable(previous):
            previous(signum, frame)

    signal.signal(sig, on_stop)
    _stop["installed"] = True


def stop_requested() -> int | None:
    """The stop signal's number once it has arrived (after :func:`handle_stop`), else None."""
    sig = _stop["signal"]
    return int(sig) if sig is not None else None


def interrupted() -> bool:
    """True once an interruption notice or the stop signal has arrived: save and stop soon.

    The first call (from the main thread) also calls :func:`handle_stop`, so from then on
    the stop signal sets the flag instead of ending the process.
    """
    handle_stop()
    return _stop["signal"] is not None or notice() is not None
