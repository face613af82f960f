"""One atomic file write, for the job's side and the agent's: a reader sees the old file or
the new one, whole, never a part.

Standard library only, Python 3.9 (the job API imports it). The caller says whether the
data must survive a power cut (``fsync``): a status file the agent rewrites every sync need
not, a local index a warm restart trusts must.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path


def write_atomic(
    path: Path,
    data: bytes | Iterable[bytes],
    *,
    fsync: bool,
    temp_suffix: str = ".tmp",
    mode: int = 0o600,
) -> None:
    """Replace ``path`` with ``data``: a new temporary file beside it (created, never
    opened through a link, with ``mode``), written whole, flushed to disk when ``fsync``,
    then renamed over ``path``. The temporary file ends with ``temp_suffix`` (the job API
    passes the one a sync skips) and is removed when anything fails. ``data`` may come in
    pieces (an iterable of bytes), so that a big file is never whole in memory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{temp_suffix}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        try:
            for piece in (data,) if isinstance(data, bytes) else data:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
