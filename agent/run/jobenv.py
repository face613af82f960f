"""What the job sees of the agent: its environment, the notice and status files, and its
checkpoint dir, made and locked before any attempt is claimed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from checkpoint import protocol
from checkpoint.engine.store.base import make_private_dirs

from .. import logs
from ..config import ConfigError, Settings
from ..notices import Notice, write_notice_file, write_private_file

CHECKPOINT_DIR_SETTING = "--checkpoint-dir (SPOT_AGENT_CHECKPOINT_DIR)"
log = logs.get_logger()


class JobFiles:
    """The runtime dir with the notice and status files. Writing them is best effort: a
    full disk is logged, never fatal (the notice also reaches the job as its stop signal)."""

    def __init__(self) -> None:
        self.runtime = Path(tempfile.mkdtemp(prefix="spot-agent-"))
        self.notice_file = self.runtime / protocol.NOTICE_FILE_NAME
        self.status_file = self.runtime / protocol.STATUS_FILE_NAME
        self._status: dict[str, Any] = {}
        self._status_lock = threading.Lock()  # a sync thread writes "frozen"

    def write_notice(self, notice: Notice) -> None:
        try:
            write_notice_file(self.notice_file, notice)
        except OSError as exc:
            log.error(
                "notice.file_failed",
                file=str(self.notice_file),
                error=str(exc),
                why="the job still gets the stop signal",
            )

    def write_status(self, sequence: int | None, started: float, reason: str) -> None:
        """The last completed sync, for ``checkpoint.last_sync()``/``request_sync(wait=)``."""
        now = time.time()
        with self._status_lock:
            self._status.setdefault("declared", 0.0)  # tells request_sync() to wait for it
        self._update(sequence=sequence, started=started, finished=now, reason=reason)

    def write_frozen(self, taken: float) -> None:
        """A freeze was taken at ``taken`` (Unix time)."""
        self._update(frozen=taken)

    def write_declared(self, upto: float) -> None:
        """A freeze covers the job's declarations that reached the agent up to ``upto``
        (Unix time): ``request_sync()`` returns then. 0 until the first one."""
        self._update(declared=upto)

    def _update(self, **fields: Any) -> None:
        with self._status_lock:
            self._status.update(fields)
            try:
                write_private_file(self.status_file, json.dumps(self._status))
            except OSError as exc:
                log.warning("status.file_failed", file=str(self.status_file), error=str(exc))

    def close(self) -> None:
        shutil.rmtree(self.runtime, ignore_errors=True)


def job_environ(
    s: Settings, files: JobFiles, attempt: int, restored: int | None, cut_off: bool = False
) -> dict[str, str]:
    env = dict(s.child_environ)
    env.pop(protocol.CUT_OFF_SAVE_ENV, None)  # only ever the agent's word
    if cut_off:
        env[protocol.CUT_OFF_SAVE_ENV] = "1"
    env.update(
        {
            protocol.DIR_ENV: str(s.checkpoint_dir),
            protocol.PID_ENV: str(os.getpid()),
            protocol.SYNC_SIGNAL_ENV: s.sync_signal.name,
            protocol.NOTICE_FILE_ENV: str(files.notice_file),
            protocol.STATUS_FILE_ENV: str(files.status_file),
            protocol.JOB_ID_ENV: s.job_id,
            protocol.ATTEMPT_ENV: str(attempt),
            protocol.RESTORED_ENV: "" if restored is None else str(restored),
            protocol.LOCK_FILE_ENV: str(protocol.save_lock_path(s.checkpoint_dir)),
            protocol.STOP_SIGNAL_ENV: s.stop_signal.name,
        }
    )
    return env


def prepare_checkpoint_dir(path: Path) -> None:
    """Create the checkpoint dir (0700) and prove the agent can write in it, before any
    attempt is claimed; a :class:`ConfigError` (exit 2) names the setting otherwise."""
    try:
        make_private_dirs(path)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise ConfigError(
            CHECKPOINT_DIR_SETTING, f"cannot create {path}{where}: {exc.strerror}"
        ) from None
    if not path.is_dir():
        raise ConfigError(CHECKPOINT_DIR_SETTING, f"{path} exists and is not a directory")
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".spot-agent-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            CHECKPOINT_DIR_SETTING, f"cannot write in {path}: {exc.strerror}"
        ) from None


def lock_checkpoint_dir(path: Path) -> int:
    """Take the checkpoint dir's lock for this agent's life: two agents writing one dir
    would mix two jobs' states. Returns the held descriptor (close-on-exec: the job does
    not hold it, so a killed agent never leaves it taken)."""
    lock = path / protocol.RESERVED_DIR / protocol.AGENT_LOCK_NAME
    try:
        make_private_dirs(lock.parent)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(CHECKPOINT_DIR_SETTING, f"cannot create {lock}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            CHECKPOINT_DIR_SETTING,
            f"{path} is in use by another spot-agent (pid {holder}); give each job its own dir",
        ) from None
    with contextlib.suppress(OSError):  # the pid is only for the message above
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
