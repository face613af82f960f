"""Consistent syncs: freeze the dir at a save point, then sync from the freeze.

The agent calls :func:`consistent_sync` instead of ``Syncer.sync_once``. It never
commits a directory in the middle of a save:

- the freeze waits (bounded) for a save in progress to end;
- a save that began and never finished (the saver was killed) is not committed: the last
  consistent freeze is, if it is not committed yet, else nothing;
- files written in place after the freeze make it freeze again, copying them under the
  lock; a file that changes even under the lock (its writer ignores save points) is left
  out with a warning, its last committed version kept;
- once the job has declared a state by a sync request, a sync that no request or save
  point asked for commits the newest freeze taken at one (``declared_only``), never the
  live dir in between;
- the last sync, once the job's processes are all gone (``in_place``), reads the dir where
  it is, under the lock and after the same checks, instead of linking it into a freeze
  first: nothing is left to change it.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from pathlib import Path

import structlog

from checkpoint.errors import CheckpointError, StoreError, Superseded
from checkpoint.savelock import SaveIncomplete, SaveInProgress

from .entries import FrozenFilesChanged
from .freeze import Freezer, Frozen, NotDeclared
from .sync import Syncer, SyncResult

log = structlog.get_logger("checkpoint")

#: freezes tried when files keep changing in place after each one
FREEZE_ATTEMPTS = 3
_MAPS_LINE = re.compile(r"\S+ (\S{4}) \S+ ([0-9a-f]+):([0-9a-f]+) (\d+)")


def consistent_sync(
    ckpt: Syncer,
    freezer: Freezer,
    reason: str,
    *,
    wait: float,
    rehash: str = "open",
    pids: Callable[[], Iterable[int]] | None = None,
    on_frozen: Callable[[Frozen], None] | None = None,
    final: bool = False,
    seen: Collection[tuple[int, int]] = (),
    declared_only: bool = False,
    in_place: bool = False,
) -> SyncResult:
    """Freeze (waiting up to ``wait`` s for a save), sync from the freeze, clean up.

    ``rehash``: "all" reads every file again, "open" those open or mapped for writing by a
    process at this moment (and freezes them by copy) or in ``seen`` ((dev, ino) of files
    written since the last sync, from a :class:`.writers.WriterWatch`), "never"
    trusts the stat cache. ``pids``: the processes to look at for "open" (default: every
    visible process).
    ``final``: the last sync of the agent; a save still holding the lock after ``wait``
    makes it commit the last consistent freeze instead of failing.
    ``declared_only``: the job declares its states (by sync requests): freeze the live dir
    only if a save point ended since the last freeze; else commit the newest freeze not
    committed yet, or nothing.
    ``in_place``: the job's processes are all gone: sync the dir itself, holding the lock
    (:meth:`Freezer.in_place`); should a file change all the same, the next try freezes.
    """

    def writers() -> set[tuple[int, int]]:
        return writable_inodes(pids() if pids else None) if rehash == "open" else set()

    if not freezer.usable:
        return ckpt.sync_once(reason, rehash=_rehash_predicate(rehash, writers() | set(seen)))
    last_error: FrozenFilesChanged | None = None
    for _ in range(FREEZE_ATTEMPTS):
        writing = writers()
        reread = writing | set(seen)
        fallback = False
        with contextlib.ExitStack() as lock:
            try:
                if in_place:
                    frozen = lock.enter_context(
                        freezer.in_place(wait, waiting=_log_long_save, declared_only=declared_only)
                    )
                else:
                    frozen = freezer.freeze(
                        wait,
                        copy_inodes=writing,
                        waiting=_log_long_save,
                        declared_only=declared_only,
                    )
            except NotDeclared:
                if freezer.pending is None:  # the newest declared state is committed
                    return _unchanged(ckpt, reason, final)
                frozen, fallback = freezer.pending, True
            except (SaveIncomplete, SaveInProgress) as exc:
                if isinstance(exc, SaveInProgress) and not final:
                    raise
                pending = _last_consistent(freezer, reason, str(exc))
                if pending is None and freezer.committed_any:  # the last whole state is stored
                    return _unchanged(ckpt, reason, final)
                if pending is None:  # no whole state of this run was frozen: it is not stored
                    why = f"{exc}; no consistent state since the start is stored"
                    raise SaveIncomplete(why) from exc
                frozen, fallback = pending, True
            except CheckpointError:
                if freezer.usable:
                    raise
                log.warning(
                    "freeze.unavailable", path=str(freezer.area), action="syncing the live dir"
                )
                return ckpt.sync_once(reason, rehash=_rehash_predicate(rehash, reread))
            if frozen.copied:
                log.debug("freeze.copied", paths=list(frozen.copied[:10]), count=len(frozen.copied))
            if on_frozen is not None:
                on_frozen(frozen)
            try:
                result = ckpt.sync_once(
                    reason, frozen=frozen, rehash=_rehash_predicate(rehash, reread)
                )
            except FrozenFilesChanged as exc:
                last_error = exc
                log.warning(
                    "freeze.changed_in_place",
                    paths=exc.paths[:10],
                    count=len(exc.paths),
                    action="freezing again, copying these under the lock",
                )
                freezer.changed_in_place(exc.paths)
                if fallback:  # the dir is mid-save: there is no consistent state to freeze
                    raise
                in_place = False  # something still writes: a freeze holds the state still
                continue
        read_in_place = in_place and not fallback
        held = 0 if read_in_place else freezer.held_bytes()
        freezer.committed(release=not read_in_place)
        return replace(
            result,
            frozen_at=frozen.taken,
            freeze_seconds=frozen.lock_seconds,
            freeze_bytes_held=held,
        )
    assert last_error is not None
    raise last_error


def _unchanged(ckpt: Syncer, reason: str, final: bool) -> SyncResult:
    """The result of a sync that found nothing consistent newer than the last commit. The
    last sync of an attempt still asks whether a newer attempt has taken over: a stale
    attempt says so (``Superseded``) even when it has nothing to commit."""
    if final:
        try:
            ckpt.job.check_current(ckpt.attempt)
        except Superseded:
            raise
        except StoreError:
            pass  # the store cannot say now; there is nothing to commit either way
    base = ckpt.base
    files, size = (len(base.files), base.size) if base is not None else (0, 0)
    return SyncResult(reason, None, files, size, 0, 0, 0, 0.0)


def _last_consistent(freezer: Freezer, reason: str, why: str) -> Frozen | None:
    pending = freezer.pending
    log.warning(
        "sync.save_incomplete",
        reason=reason,
        why=why,
        action="committing the last consistent freeze"
        if pending
        else "nothing newer than the last commit is consistent",
    )
    return pending


def _log_long_save(waited: float) -> None:
    log.warning(
        "freeze.waiting_for_save",
        waited=round(waited, 3),
        why="the job holds its save-point lock; the checkpoint waits for the save to end",
    )


def _rehash_predicate(
    mode: str, writing: set[tuple[int, int]]
) -> Callable[[os.stat_result], bool] | None:
    if mode == "all":
        return lambda _st: True
    if mode == "open" and writing:
        return lambda st: (st.st_dev, st.st_ino) in writing
    return None


def writable_inodes(
    pids: Iterable[int] | None = None, proc: Path = Path("/proc")
) -> set[tuple[int, int]]:
    """(dev, ino) of every file the processes have open for writing or mapped shared and
    writable (numpy.memmap, LMDB): the stat cache cannot see writes through a mapping."""
    found: set[tuple[int, int]] = set()
    if pids is None:
        try:
            pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
        except OSError:
            return found
    for pid in pids:
        base = proc / str(pid)
        with contextlib.suppress(OSError):
            for fd in os.listdir(base / "fd"):
                with contextlib.suppress(OSError):
                    flags = _fd_flags(base / "fdinfo" / fd)
                    if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                        st = os.stat(base / "fd" / fd)
                        found.add((st.st_dev, st.st_ino))
        with contextlib.suppress(OSError), open(base / "maps") as maps:
            for line in maps:
                m = _MAPS_LINE.match(line)
                if m and m.group(1)[1] == "w" and m.group(1)[3] == "s":
                    dev = os.makedev(int(m.group(2), 16), int(m.group(3), 16))
                    found.add((dev, int(m.group(4))))
    return found


def _fd_flags(fdinfo: Path) -> int:
    for line in fdinfo.read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return 0
