"""The job<->agent contract, each fact once: names in the checkpoint dir, the job's
environment, the files the agent writes for the job.

Standard library only, Python 3.9: the job API (:mod:`checkpoint.api`) imports it from the
job's own interpreter, the agent (``agent/run/jobenv.py``) and the engine from theirs. A
job in another language reads the same names from ``docs/job-api.md``.
"""

from __future__ import annotations

from pathlib import Path

# -- inside the checkpoint dir ------------------------------------------------------------

#: The agent's own files inside a checkpoint dir; never synced, never restored over.
RESERVED_DIR = ".spot-agent"
#: Suffix of the checkpoint API's temporary files: a file being written is not synced.
TEMP_SUFFIX = ".spot-tmp"
#: The job's save-point lock (in RESERVED_DIR): a save holds an exclusive flock on it and
#: marks it while under way (:mod:`checkpoint.savelock` owns the mark).
SAVE_LOCK_NAME = "save.lock"
#: The agent's own lock (in RESERVED_DIR), held for its life: one agent per dir.
AGENT_LOCK_NAME = "agent.lock"
#: The job's ``report_progress`` figures (in RESERVED_DIR), stored in the next manifest.
PROGRESS_NAME = "progress.json"
#: The label of the job's last save (in RESERVED_DIR, ``checkpoint.saving(label=...)``):
#: written under the save-point lock, read with the freeze (a group's "same save point").
SAVE_LABEL_NAME = "save-label"
#: A save label is one line of at most this many characters.
MAX_SAVE_LABEL_CHARS = 200

# -- the job's environment, set by the agent ------------------------------------------------

DIR_ENV = "CHECKPOINT_DIR"  # the checkpoint dir
PID_ENV = "SPOT_AGENT_PID"  # send it the sync signal
SYNC_SIGNAL_ENV = "SPOT_AGENT_SYNC_SIGNAL"  # its name (default SIGUSR1)
STOP_SIGNAL_ENV = "SPOT_AGENT_STOP_SIGNAL"  # its name (default SIGTERM)
NOTICE_FILE_ENV = "SPOT_AGENT_NOTICE_FILE"  # appears (JSON) when a notice arrives
STATUS_FILE_ENV = "SPOT_AGENT_STATUS_FILE"  # JSON of the last completed sync
LOCK_FILE_ENV = "SPOT_AGENT_LOCK_FILE"  # the save-point lock
JOB_ID_ENV = "SPOT_AGENT_JOB_ID"
ATTEMPT_ENV = "SPOT_AGENT_ATTEMPT"
RESTORED_ENV = "SPOT_AGENT_RESTORED"  # the restored checkpoint's sequence, "" on a fresh start
#: "1" when the job starts on a dir holding a save cut off by a kill that no checkpoint
#: could replace: nothing is committed until the job completes a save
CUT_OFF_SAVE_ENV = "SPOT_AGENT_CUT_OFF_SAVE"

# -- the agent's runtime dir (outside the checkpoint dir) ---------------------------------

NOTICE_FILE_NAME = "notice.json"
STATUS_FILE_NAME = "status.json"


def save_lock_path(checkpoint_dir: Path) -> Path:
    """The job's save-point lock of ``checkpoint_dir`` (``SPOT_AGENT_LOCK_FILE``)."""
    return checkpoint_dir / RESERVED_DIR / SAVE_LOCK_NAME


def progress_path(checkpoint_dir: Path) -> Path:
    """Where ``report_progress`` leaves the job's figures for the next sync."""
    return checkpoint_dir / RESERVED_DIR / PROGRESS_NAME


def save_label_path(checkpoint_dir: Path) -> Path:
    """Where the job leaves the label of the save it holds the lock for."""
    return checkpoint_dir / RESERVED_DIR / SAVE_LABEL_NAME
