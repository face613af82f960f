"""A save's label: which save point a checkpoint holds, in words the job chose (the step).

The job writes the label into ``.spot-agent/save-label`` (beside the save-point lock) while
it holds the lock: ``checkpoint.saving(label=step)`` does it, and a job in another language
writes the file itself under its ``flock``. The freeze reads it under the same lock, so a
checkpoint's label is the label of the save it holds; the manifest keeps it in its
``progress`` under ``LABEL_KEY`` (every manifest format stores ``progress``). A group
(:mod:`checkpoint.engine.group`) commits one save point of every rank by this label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .protocol import MAX_SAVE_LABEL_CHARS, SAVE_LABEL_NAME

#: the key of a checkpoint's save label in its manifest's ``progress``
LABEL_KEY = "save_label"


def read_save_label(reserved_dir: Path) -> str | None:
    """The label of the last whole save, or None (no label file, or not a short line)."""
    try:
        with open(reserved_dir / SAVE_LABEL_NAME, "rb") as fh:
            raw = fh.read(MAX_SAVE_LABEL_CHARS + 1)
    except OSError:
        return None
    try:
        label = raw.decode().strip()
    except UnicodeDecodeError:
        return None
    if not label or len(label) > MAX_SAVE_LABEL_CHARS or "\n" in label:
        return None
    return label


def with_save_label(progress: dict[str, Any], reserved_dir: Path) -> dict[str, Any]:
    """``progress`` with the save's label under ``LABEL_KEY`` (the job's own key of that
    name is replaced: the label file is what the freeze saw under the lock)."""
    label = read_save_label(reserved_dir)
    if label is None:
        return progress
    return {**progress, LABEL_KEY: label}
