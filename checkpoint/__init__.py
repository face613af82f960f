"""Checkpoints for jobs that run on interruptible capacity.

The job author's API (see :mod:`checkpoint.api`)::

    import checkpoint
    state = checkpoint.load_json("state.json", default={"step": 0})
    with checkpoint.saving():                      # a save point: files saved together
        checkpoint.save_json("state.json", state)  # atomic
    checkpoint.request_sync()                      # "consistent now": freeze and commit
    if checkpoint.interrupted(): ...               # a notice or the stop signal arrived

The rest of the package (store, manifest, sync) is the library the agent is built on.
"""

from ._version import __version__
from .api import (
    atomic_write,
    directory,
    handle_stop,
    interrupted,
    last_sync,
    load_bytes,
    load_json,
    notice,
    report_progress,
    request_sync,
    save_bytes,
    save_json,
    saving,
    stop_requested,
)

__all__ = [
    "__version__",
    "atomic_write",
    "directory",
    "handle_stop",
    "interrupted",
    "last_sync",
    "load_bytes",
    "load_json",
    "notice",
    "report_progress",
    "request_sync",
    "save_bytes",
    "save_json",
    "saving",
    "stop_requested",
]
