"""Restore a paged checkpoint into an empty directory a page at a time: memory bounded by
a batch of entries, not by the checkpoint's size (issue 23).

``checkpoints restore --to`` an empty or new directory takes this path. Everything else
restores whole (:mod:`.restore`): the agent's own restore, whose manifest becomes the next
sync's base; a checkpoint stored whole (formats 1 to 3: at most 64 MiB of manifest); a
directory that holds anything but the agent's reserved dir.

Two passes over the pages:

1. **Check.** Every page is read and checked against its hash, and each entry through the
   validation of every format (:func:`..format.paged.checked_page`); the bytes of the pages
   of files are kept in the staging dir. The whole-tree checks run over the stream in the
   walk's order (:func:`..format.tree.in_walk_order`): dirs, links and hard links are held,
   files are not. Files that are not in that order (no agent that writes pages writes
   them so) cannot be checked in one pass: :class:`NotStreamable`, and the checkpoint
   restores whole. So a damaged checkpoint is passed over before any of its data is
   downloaded, and the bytes to move are known before the first one moves.
2. **Download.** The kept pages are read back, checked against their hashes again, in
   batches of about :data:`BATCH_FILES` files. Each batch is downloaded and verified into
   the staging dir (:meth:`.download.Downloader.download`), and its files moved into a tree
   there that mirrors the checkpoint.

Only when every byte has arrived is that tree moved into the directory, one rename for each
name at its top; then the links, the hard links and the modes of the directories are set.
A damaged chunk leaves the directory as it was, and restore passes over to the checkpoint
before, as a whole restore does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from checkpoint.errors import LocalWriteError, ManifestError
from checkpoint.protocol import RESERVED_DIR

from ..config import EngineConfig
from ..format import paged
from ..format.jobstore import JobStore
from ..format.manifest import FileEntry, Manifest
from ..format.tree import in_walk_order
from ..format.whole import assemble
from ..progress import Listener, Progress
from .download import Downloader
from .placement import place_links, set_dir_modes

log = structlog.get_logger("checkpoint")

#: files downloaded in one batch (about 4 MiB of entries); the chunk bytes in flight are
#: bounded by the config's ``max_bytes_in_flight`` whatever a batch holds
BATCH_FILES = 8192


class NotStreamable(Exception):
    """This checkpoint cannot be restored a page at a time: restore it whole."""


@dataclass(frozen=True)
class Streamed:
    #: the checkpoint's facts, dirs, links and hard links, but not its files: they were
    #: never all in memory
    head: Manifest
    files: int
    nbytes: int


@dataclass(frozen=True)
class _Checked:
    head: Manifest
    pages: list[dict[str, Any]]  # the pages of files, in order; page n's bytes in spool/n
    fmt: int
    wanted: int  # the bytes to download


def holds_nothing(dest: Path) -> bool:
    """Is ``dest`` missing, or empty but for the agent's reserved dir?"""
    try:
        return all(name == RESERVED_DIR for name in os.listdir(dest))
    except FileNotFoundError:
        return True


class StreamedRestore:
    def __init__(
        self,
        job: JobStore,
        pool: ThreadPoolExecutor,
        listener: Listener | None,
        config: EngineConfig,
    ) -> None:
        self.job = job
        self._pool = pool
        self._listener = listener
        self._config = config

    def run(self, seq: int, root: bytes, dest: Path, staging: Path) -> Streamed:
        """Restore checkpoint ``seq``, whose root (:func:`..format.paged.is_paged`) is
        ``root``, into ``dest`` (:func:`holds_nothing`) through the empty dir ``staging``,
        inside ``dest``'s reserved dir."""
        key = self.job.manifest_key(seq)
        spool, tree, batch = staging / "pages", staging / "tree", staging / "batch"
        for made in (spool, tree, batch):
            made.mkdir(mode=0o700)
        with paged.reading(key):
            checked = self._check(root, spool)
        head = checked.head
        if head.sequence != seq:
            raise ManifestError(f"{key}: says it is sequence {head.sequence}")
        for d in head.dirs:
            (tree / d.path).mkdir(mode=0o700, parents=True, exist_ok=True)
        progress = Progress(
            "restore.progress",
            checked.wanted,
            listener=self._listener,
            every=self._config.progress_seconds,
        )
        downloader = Downloader(self.job, self._pool, self._listener, config=self._config)
        files = nbytes = 0
        made = tree
        for part in self._batches(checked, spool):
            nbytes += downloader.download(part, batch, progress)
            for i, f in enumerate(part):
                target = tree / f.path
                if target.parent != made:  # files come dir by dir: one mkdir for each
                    made = target.parent
                    made.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.replace(batch / str(i), target)
            files += len(part)
        _move_in(tree, dest)
        place_links(dest, head.links, head.hardlinks)
        set_dir_modes(dest, head.dirs)
        return Streamed(head, files, nbytes)

    def _check(self, root: bytes, spool: Path) -> _Checked:
        """Pass 1: every page checked, the tree checked as one, the pages of files kept."""
        doc, fmt, packs, listed = paged.load_root(root)
        read = self.job.page_reader()
        pages = [p for p in listed if p["kind"] == "files"]
        others = [p for p in listed if p["kind"] != "files"]
        small: dict[str, list[Any]] = {"dirs": [], "links": [], "hardlinks": []}
        for page, data in zip(others, read([p["id"] for p in others]), strict=True):
            small[page["kind"]].extend(self._entries(page, data, packs, fmt)[0])
        items = sum(p["entries"] for p in listed)
        wanted = 0

        def files() -> Iterator[FileEntry]:
            nonlocal items, wanted
            for n, (page, data) in enumerate(
                zip(pages, read([p["id"] for p in pages]), strict=True)
            ):
                entries, data = self._entries(page, data, packs, fmt)
                (spool / str(n)).write_bytes(data)  # the bytes that matched, if read twice
                for f in entries:
                    items += len(f.chunks)
                    wanted += sum(c.size for c in f.chunks if not c.is_hole)
                if items > paged.MAX_ITEMS:
                    raise ManifestError(f"over {paged.MAX_ITEMS} entries and chunks")
                yield from entries

        dirs, links, hardlinks = (tuple(small[kind]) for kind in ("dirs", "links", "hardlinks"))
        if not in_walk_order(files(), dirs, links, hardlinks):
            raise NotStreamable("its files are not in the walk's order")
        head = assemble(doc, (), dirs, links, (), packs)  # its hard links' files were met above
        head = replace(head, hardlinks=hardlinks, pages=tuple(p["id"] for p in listed))
        return _Checked(head, pages, fmt, wanted)

    def _batches(self, checked: _Checked, spool: Path) -> Iterator[list[FileEntry]]:
        """Pass 2: the files, read back from the pages kept, about BATCH_FILES at a time."""
        batch: list[FileEntry] = []
        packs = checked.head.packs
        for n, page in enumerate(checked.pages):
            kept = (spool / str(n)).read_bytes()
            batch.extend(self._entries(page, kept, packs, checked.fmt)[0])
            if len(batch) >= BATCH_FILES:
                yield batch
                batch = []
        if batch:
            yield batch

    def _entries(
        self, page: dict[str, Any], data: bytes, packs: dict[str, int], fmt: int
    ) -> tuple[list[Any], bytes]:
        """The page's entries and the bytes they were read from: bytes that do not match
        its hash (damaged in flight, or on the local disk since) are read from the store
        once more, as a whole restore does."""
        try:
            return paged.checked_page(page, data, packs, fmt), data
        except ManifestError as exc:
            log.warning("restore.manifest_retry", page=page["id"], error=str(exc))
            data = self.job.read_page(page["id"])
            return paged.checked_page(page, data, packs, fmt), data


def _move_in(tree: Path, dest: Path) -> None:
    """Every name at the top of ``tree`` renamed into ``dest``, which must still hold none."""
    names = os.listdir(tree)
    there = [n for n in os.listdir(dest) if n != RESERVED_DIR]
    if there:
        raise LocalWriteError(f"{dest / there[0]} appeared while the checkpoint was restored")
    for name in names:
        os.rename(tree / name, dest / name)
