"""Restore a committed checkpoint into a directory: choose, download, verify, put in place.

Every chunk is verified against its hash (BLAKE3 or sha256) before it is used (guarantee
2); a checkpoint whose manifest is malformed or whose blobs are missing or damaged is passed
over, loudly, for the one before it. Files are downloaded into a staging dir inside the
destination and moved into place only once every byte of the checkpoint has arrived, so a
failed restore leaves the directory as it was.

Retries live in one layer each: the store retries the network (botocore's retries, and
:class:`~checkpoint.engine.store.s3.S3Store` re-reads a body cut short); restore only fetches a
chunk once more when its bytes do not match their hash.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Callable, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import structlog

from checkpoint.errors import (
    CheckpointDamaged,
    LocalWriteError,
    ManifestError,
    ObjectNotFound,
    ObjectTooLarge,
    StoreError,
    StoreUnavailable,
)

from ..config import DEFAULTS, EngineConfig
from ..format.jobstore import JobStore
from ..format.manifest import Manifest
from ..format.paged import is_paged
from ..localdir.localindex import LocalIndex
from ..localdir.stats import StatMap
from ..progress import Listener
from .aside import SetAside
from .download import Downloader
from .kept import count_extra, partition
from .packread import HASH_ATTEMPTS
from .placement import (
    clear_for_file,
    os_error,
    place_links,
    safe_makedirs,
    safe_parent,
    set_dir_modes,
)
from .presence import verify_present
from .staging import staging_dir
from .streamed import NotStreamable, StreamedRestore, holds_nothing

log = structlog.get_logger("checkpoint")

_T = TypeVar("_T")


@dataclass(frozen=True)
class RestoreResult:
    manifest: Manifest | None
    files_written: int = 0
    files_kept: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0
    skipped: tuple[tuple[int, str], ...] = ()  # damaged checkpoints passed over
    extra_files: int = 0  # files in the dir that the checkpoint does not have
    #: of the files kept, those the local index vouched for (not read at all)
    files_indexed: int = 0
    bytes_hashed: int = 0  # bytes of local files read to check them against the checkpoint
    #: set by the agent's restore (:mod:`agent.run.savepoints`): what the checkpoint lacks,
    #: moved out of the job's sight; and the mark of a save cut off by a kill found in the
    #: dir (the saver's pid, "" if unknown), None if there was none
    aside: SetAside | None = None
    cut_off_save: str | None = None
    #: the cut-off save is still in the dir (no checkpoint could replace it)
    cut_off_kept: bool = False
    #: restored a page at a time (:mod:`.streamed`): ``manifest`` lists no files
    streamed: bool = False


@dataclass(frozen=True)
class _Materialized:
    written: int
    kept: int
    nbytes: int
    extra: int
    present: Set[str]  # blobs known to be in the store after this restore
    indexed: int = 0
    hashed: int = 0


class Restorer:
    """Restores one job's checkpoints; transfers run on the caller's thread pool."""

    def __init__(
        self,
        job: JobStore,
        pool: ThreadPoolExecutor,
        listener: Listener | None = None,
        *,
        config: EngineConfig = DEFAULTS,
    ) -> None:
        self.job = job
        self._pool = pool
        self._listener = listener  # restore.progress reports (default: the log)
        self._config = config  # what download and packread use: bounds, batch sizes
        #: blobs the restored checkpoint references that are known to be in the store
        self.present: Set[str] = frozenset()
        #: lstat of files kept untouched because the local index vouched for them (the
        #: stat cache is seeded from these: the first sync reads none of them)
        self.stats: StatMap = StatMap()

    def restore(self, sequence: int | None, dest: Path, *, streamed: bool = False) -> RestoreResult:
        """Restore ``sequence`` (default: the newest intact checkpoint) into ``dest``.

        Raises :class:`CheckpointDamaged` only when an explicitly requested sequence cannot
        be restored. A checkpoint the store fails to serve (after its own retries) is passed
        over like a damaged one; but when no older one restores either, that error is
        raised: a store that cannot be read right now never means "no checkpoint".

        ``streamed``: a paged checkpoint is restored a page at a time when ``dest`` holds
        nothing (:mod:`.streamed`); the result's manifest then lists no files, and its
        ``streamed`` is True. For a restore that no sync will take as its base.
        """
        started = time.monotonic()
        candidates = [sequence] if sequence is not None else self.job.sequences()[::-1]
        skipped: list[tuple[int, str]] = []
        unreadable: StoreError | None = None
        for seq in candidates:
            try:
                got, data = None, None
                if streamed and self.job.stores_manifests and holds_nothing(dest):
                    data = self.job.manifest_bytes(seq)
                    if is_paged(data):  # else one object, 64 MiB at most: loaded whole
                        got = self._locally(seq, dest, partial(self._streamed, seq, data, dest))
                if got is None:
                    manifest = self._load(seq, data)
                    done = self._locally(seq, dest, partial(self._materialize, manifest, dest))
                else:
                    manifest, done = got
            except StoreUnavailable:
                raise  # the store, not this checkpoint: no fallback would fare better
            except (ManifestError, CheckpointDamaged, ObjectNotFound, ObjectTooLarge) as exc:
                if sequence is not None:
                    raise CheckpointDamaged(f"checkpoint {seq} cannot be restored: {exc}") from exc
                self._passed_over(seq, exc, skipped)
                continue
            except StoreError as exc:
                if sequence is not None:
                    raise
                unreadable = unreadable or exc
                self._passed_over(seq, exc, skipped)
                continue
            self.present = done.present
            return RestoreResult(
                manifest,
                done.written,
                done.kept,
                done.nbytes,
                time.monotonic() - started,
                tuple(skipped),
                done.extra,
                done.indexed,
                done.hashed,
                streamed=got is not None,
            )
        if unreadable is not None:
            raise unreadable
        return RestoreResult(None, seconds=time.monotonic() - started, skipped=tuple(skipped))

    @staticmethod
    def _locally(seq: int, dest: Path, step: Callable[[], _T]) -> _T:
        """``step()``, its local errors said as such: the stored checkpoint is fine, and it
        is not passed over."""
        try:
            return step()
        except OSError as exc:
            cause: Exception = exc
            why = os_error(exc)
        except LocalWriteError as exc:
            cause, why = exc, str(exc)
        raise LocalWriteError(f"cannot restore checkpoint {seq} into {dest}: {why}") from cause

    def _streamed(self, seq: int, root: bytes, dest: Path) -> tuple[Manifest, _Materialized] | None:
        """Checkpoint ``seq`` (its root ``root``) restored a page at a time into ``dest``;
        None, with nothing done, if it cannot be (:class:`.streamed.NotStreamable`)."""
        with staging_dir(dest) as staging:
            try:
                done = StreamedRestore(self.job, self._pool, self._listener, self._config).run(
                    seq, root, dest, staging
                )
            except NotStreamable as exc:
                log.info("restore.not_streamed", sequence=seq, why=str(exc))
                return None
        return done.head, _Materialized(done.files, 0, done.nbytes, 0, frozenset())

    @staticmethod
    def _passed_over(seq: int, exc: Exception, skipped: list[tuple[int, str]]) -> None:
        log.error(
            "restore.checkpoint_damaged",
            sequence=seq,
            error=str(exc),
            action="falling back to the previous checkpoint",
        )
        skipped.append((seq, str(exc)))

    def _load(self, seq: int, data: bytes | None) -> Manifest:
        """The manifest (``data``: its bytes, if read already); one that does not parse is
        read once more (bytes damaged in flight)."""
        for attempt in range(1, HASH_ATTEMPTS + 1):
            try:
                if data is not None and attempt == 1:
                    return self.job.decode_manifest(seq, data)
                return self.job.load_manifest(seq)
            except ManifestError as exc:
                if attempt == HASH_ATTEMPTS:
                    raise
                log.warning("restore.manifest_retry", sequence=seq, error=str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _materialize(self, manifest: Manifest, dest: Path) -> _Materialized:
        with staging_dir(dest) as staging:
            index = LocalIndex.load(dest, manifest, boot_id_path=self._config.boot_id_path)
            # Not overlapped with the listing below: on two cores, a thread parsing listing
            # pages slows the lstat loop (GIL hand-offs) more than the overlap saves.
            part = partition(manifest, dest, index)
            kept, fetch, self.stats = part.kept, part.fetch, part.stats
            downloader = Downloader(self.job, self._pool, self._listener, config=self._config)
            nbytes = downloader.download(fetch, staging)
            present = verify_present(self.job, kept, self._pool)
            for d in manifest.dirs:
                safe_makedirs(dest, d.path)
            for i, f in enumerate(fetch):
                target = safe_parent(dest, f.path) / f.path.rsplit("/", 1)[-1]
                clear_for_file(target)
                os.replace(staging / str(i), target)
            place_links(dest, manifest.links, manifest.hardlinks)
            set_dir_modes(dest, manifest.dirs)
        extra = count_extra(dest, manifest)
        present.update(c.digest for f in fetch for c in f.chunks if not c.is_hole)  # fetched
        relinked = {h.target for h in manifest.hardlinks}  # os.link moved their ctime
        for p in relinked:
            self.stats.pop(p, None)
        return _Materialized(
            len(fetch),
            len(kept),
            nbytes,
            extra,
            present,
            indexed=len(self.stats),
            hashed=part.hashed,
        )


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the new (soft, hard).

    Restore needs only a bounded number of descriptors (``EngineConfig.max_open_files``), but
    the job and the S3 connection pool share the limit: containers often start at 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)
