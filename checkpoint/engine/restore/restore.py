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
import uuid
from collections.abc import Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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
from checkpoint.protocol import RESERVED_DIR

from ..config import DEFAULTS, EngineConfig
from ..format.jobstore import JobStore
from ..format.manifest import FileEntry, Manifest, check_link_target
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
    rmtree,
    safe_makedirs,
    safe_parent,
)
from .presence import stored_keys

log = structlog.get_logger("checkpoint")

STAGING_PREFIX = "restore-"


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

    def restore(self, sequence: int | None, dest: Path) -> RestoreResult:
        """Restore ``sequence`` (default: the newest intact checkpoint) into ``dest``.

        Raises :class:`CheckpointDamaged` only when an explicitly requested sequence cannot
        be restored. A checkpoint the store fails to serve (after its own retries) is passed
        over like a damaged one; but when no older one restores either, that error is
        raised: a store that cannot be read right now never means "no checkpoint".
        """
        started = time.monotonic()
        candidates = [sequence] if sequence is not None else self.job.sequences()[::-1]
        skipped: list[tuple[int, str]] = []
        unreadable: StoreError | None = None
        for seq in candidates:
            try:
                manifest = self._load(seq)
                try:
                    done = self._materialize(manifest, dest)
                except OSError as exc:  # local: the stored checkpoint is fine, do not skip it
                    raise LocalWriteError(
                        f"cannot restore checkpoint {seq} into {dest}: {os_error(exc)}"
                    ) from exc
                except LocalWriteError as exc:
                    raise LocalWriteError(
                        f"cannot restore checkpoint {seq} into {dest}: {exc}"
                    ) from exc
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
            )
        if unreadable is not None:
            raise unreadable
        return RestoreResult(None, seconds=time.monotonic() - started, skipped=tuple(skipped))

    @staticmethod
    def _passed_over(seq: int, exc: Exception, skipped: list[tuple[int, str]]) -> None:
        log.error(
            "restore.checkpoint_damaged",
            sequence=seq,
            error=str(exc),
            action="falling back to the previous checkpoint",
        )
        skipped.append((seq, str(exc)))

    def _load(self, seq: int) -> Manifest:
        """The manifest; one that does not parse is read once more (bytes damaged in flight)."""
        for attempt in range(1, HASH_ATTEMPTS + 1):
            try:
                return self.job.load_manifest(seq)
            except ManifestError as exc:
                if attempt == HASH_ATTEMPTS:
                    raise
                log.warning("restore.manifest_retry", sequence=seq, error=str(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _materialize(self, manifest: Manifest, dest: Path) -> _Materialized:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_stale_staging(dest)
        staging = dest / RESERVED_DIR / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True, mode=0o700)
        try:
            index = LocalIndex.load(dest, manifest, boot_id_path=self._config.boot_id_path)
            # Not overlapped with the listing below: on two cores, a thread parsing listing
            # pages slows the lstat loop (GIL hand-offs) more than the overlap saves.
            part = partition(manifest, dest, index)
            kept, fetch, self.stats = part.kept, part.fetch, part.stats
            downloader = Downloader(self.job, self._pool, self._listener, config=self._config)
            nbytes = downloader.download(fetch, staging)
            present = self._verify_present(kept)
            for d in manifest.dirs:
                safe_makedirs(dest, d.path)
            for i, f in enumerate(fetch):
                target = safe_parent(dest, f.path) / f.path.rsplit("/", 1)[-1]
                clear_for_file(target)
                os.replace(staging / str(i), target)
            for lk in manifest.links:
                target = safe_parent(dest, lk.path) / lk.path.rsplit("/", 1)[-1]
                clear_for_file(target)
                os.symlink(check_link_target(lk.target), target)
            for h in manifest.hardlinks:
                target = safe_parent(dest, h.path) / h.path.rsplit("/", 1)[-1]
                clear_for_file(target)
                source = safe_parent(dest, h.target) / h.target.rsplit("/", 1)[-1]
                os.link(source, target, follow_symlinks=False)
            # Deepest first, last of all: a read-only directory must not stop its own restore.
            for d in sorted(manifest.dirs, key=lambda d: d.path.count("/"), reverse=True):
                if d.mode is not None:
                    os.chmod(safe_makedirs(dest, d.path), d.mode)
        finally:
            rmtree(staging)
            with contextlib.suppress(OSError):
                staging.parent.rmdir()  # only if empty: it may hold the job's progress
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

    def _verify_present(self, kept: list[FileEntry]) -> set[str]:
        """Kept files were not downloaded: which of their blobs does the store still have?

        The objects to look for (a pack's key once, however many chunks it holds) are
        named a second time to sort the chunks, rather than kept in a map of every chunk."""
        key = self.job.chunk_key
        found = stored_keys(
            self.job, {key(c) for f in kept for c in f.chunks if not c.is_hole}, self._pool
        )
        present: set[str] = set()
        missing: set[str] = set()
        for f in kept:
            for c in f.chunks:
                if not c.is_hole:
                    (present if key(c) in found else missing).add(c.digest)
        missing -= present  # a chunk stored twice, in a pack that is gone and one that is not
        if missing:
            # The local copy is intact, so the job loses nothing: the next sync uploads them.
            log.warning(
                "restore.blobs_missing_in_store",
                count=len(missing),
                action="they will be uploaded again by the next sync",
            )
        return present


def remove_stale_staging(dest: Path) -> None:
    """Staging dirs of restores that were killed (``kill -9``) before they cleaned up.

    Only one restore runs into a checkpoint dir at a time (the agent holds the dir), so
    any staging dir found before ours starts is a leftover.
    """
    reserved = dest / RESERVED_DIR
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(reserved):
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
                log.info("restore.stale_staging_removed", path=entry.path)
                rmtree(Path(entry.path))


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
