"""Checkpoints for jobs that run on interruptible capacity.

The job author's API (see :mod:`checkpoint.api`)::

    import checkpoint
    state = checkpoint.load_json("state.json", default={"step": 0})
    checkpoint.save_json("state.json", state)     # atomic
    checkpoint.request_sync()                      # ask the agent to commit now
    if checkpoint.interrupted(): ...               # a notice has arrived

The rest of the package (store, manifest, sync) is the library the agent is built on.
"""

from ._version import __version__
from .api import (
    atomic_write,
    directory,
    interrupted,
    last_sync,
    load_bytes,
    load_json,
    notice,
    report_progress,
    request_sync,
    save_bytes,
    save_json,
)

__all__ = [
    "__version__",
    "atomic_write",
    "directory",
    "interrupted",
    "last_sync",
    "load_bytes",
    "load_json",
    "notice",
    "report_progress",
    "request_sync",
    "save_bytes",
    "save_json",
]
